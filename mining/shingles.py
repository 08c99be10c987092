"""A batch of texts, normalised, as one array of code points, and n-grams of it, vectorised.

Near-duplicate detection shingles it into character or word n-grams;
decontamination into n-grams of words where each CJK, Thai, Lao, Khmer or
Myanmar character counts as a word, since those scripts put no spaces
between words. Normalising is the same for both: NFKC, case folded, and
every run of punctuation, symbols, separators, controls and format characters
(what exact dedup ignores) becomes one space between words.
"""

import functools
import sys
import unicodedata
from dataclasses import dataclass

import numpy as np

from mining.dedup import ignored_characters

_UNSPACED_RANGES = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x31F0, 0x31FF),  # Katakana phonetic extensions
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0x20000, 0x323AF),  # CJK extensions B to H, compatibility supplement
)
_SPACE = ord(" ")
_TEXT_BOUND = "\x00"

_MASK64 = (1 << 64) - 1
# Odd, so invertible modulo 2**64: a span's hash is cut out of prefix sums.
_BASE = 0x9E3779B97F4A7C15
_BASE_INVERSE = pow(_BASE, -1, 1 << 64)
_LENGTH_SALT = 0xC2B2AE3D27D4EB4F
_FMIX64 = (33, 0xFF51AFD7ED558CCD, 33, 0xC4CEB9FE1A85EC53, 33)
# Powers of the base (and of its inverse) are kept for batches of up to this many code points: 8 MiB each.
_CACHED_POWERS = 1 << 20


@functools.cache
def _unspaced_table() -> np.ndarray:
    table = np.zeros(sys.maxunicode + 1, dtype=bool)
    for first, last in _UNSPACED_RANGES:
        table[first : last + 1] = True
    return table


@functools.cache
def _codepoint_map() -> np.ndarray:
    """Every code point to what it becomes: a space if it separates words, else itself."""
    table = np.arange(sys.maxunicode + 1, dtype=np.uint32)
    table[ignored_characters()] = _SPACE
    return table


def _folded(texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The code points of the texts NFKC normalised, then case folded, end to end, and each text's offset and length.

    ASCII is NFKC already. Case folding maps each character on its own, so the
    batch is folded at once, each text after the one before and a NUL: a
    separator, leading the text, which normalising then drops. Only a batch
    with a NUL of its own is folded text by text.
    """
    normalized = [text if text.isascii() else unicodedata.normalize("NFKC", text) for text in texts]
    bounded = _TEXT_BOUND.join(normalized)
    if bounded.count(_TEXT_BOUND) == max(len(texts) - 1, 0):
        codepoints = _utf32(bounded.casefold())
        offsets = np.flatnonzero(codepoints == ord(_TEXT_BOUND))
        offsets = np.concatenate(([0], offsets)) if texts else offsets
    else:
        folded = [text.casefold() for text in normalized]
        codepoints = _utf32("".join(folded))
        offsets = _starts_of(np.fromiter(map(len, folded), dtype=np.int64, count=len(folded)))
    return codepoints, offsets, np.diff(offsets, append=len(codepoints))


def _utf32(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


@dataclass(frozen=True)
class Items:
    """Spans of the batch (characters, words or n-grams of them), in text order."""

    starts: np.ndarray
    ends: np.ndarray
    per_text: np.ndarray


class NormalizedBatch:
    """The normalised texts end to end: ``codepoints``, with each text's ``offsets`` and ``lengths``."""

    def __init__(self, texts: list[str]):
        raw, raw_offsets, raw_lengths = _folded(texts)
        mapped = _codepoint_map()[raw]
        word_char = mapped != _SPACE
        word_positions = np.flatnonzero(word_char)
        first_words = np.searchsorted(word_positions, raw_offsets)
        first_words = word_positions[first_words[first_words < len(word_positions)]]
        # A run of separators becomes one space before the word that follows it, except before the
        # first word of a text: so runs at either end of a text go, and texts never run together.
        space_kept = np.zeros(len(raw), dtype=bool)
        space_kept[:-1] = word_char[1:]
        space_kept &= ~word_char
        space_kept[first_words[first_words > 0] - 1] = False
        keep = word_char | space_kept
        self.codepoints = mapped[keep]
        kept_before = np.zeros(len(raw) + 1, dtype=np.int64)
        np.cumsum(keep, out=kept_before[1:])
        self.lengths = kept_before[raw_offsets + raw_lengths] - kept_before[raw_offsets]
        self.offsets = _starts_of(self.lengths)

    def __len__(self) -> int:
        return len(self.lengths)

    @functools.cached_property
    def joined(self) -> str:
        """The normalised texts end to end, indexed like ``codepoints``."""
        return self.codepoints.astype("<u4").tobytes().decode("utf-32-le", "surrogatepass")

    @functools.cached_property
    def utf8(self) -> bytes:
        return self.joined.encode("utf-8", "surrogatepass")

    @functools.cached_property
    def utf8_offsets(self) -> np.ndarray:
        """Where each code point starts in ``utf8``, and its length at the end."""
        codepoints = self.codepoints
        widths = 1 + (codepoints >= 0x80).astype(np.int64) + (codepoints >= 0x800) + (codepoints >= 0x10000)
        return np.concatenate(([0], np.cumsum(widths)))

    def text(self, index: int) -> str:
        start = int(self.offsets[index])
        return self.joined[start : start + int(self.lengths[index])]

    def characters(self) -> Items:
        starts = np.arange(len(self.codepoints))
        return Items(starts, starts + 1, self.lengths)

    def words(self, unspaced_characters: bool = False) -> Items:
        """Runs between spaces; with ``unspaced_characters``, every CJK/Thai/... character is a word of its own."""
        codepoints = self.codepoints
        space = np.ones(len(codepoints) + 2, dtype=bool)
        space[1:-1] = codepoints == _SPACE
        single = np.zeros(len(codepoints) + 2, dtype=bool)
        if unspaced_characters:
            single[1:-1] = _unspaced_table()[codepoints]
        text_starts = np.zeros(len(codepoints) + 2, dtype=bool)
        text_starts[1:-1][self.offsets[self.lengths > 0]] = True
        text_ends = np.zeros(len(codepoints) + 2, dtype=bool)
        text_ends[1:-1][(self.offsets + self.lengths - 1)[self.lengths > 0]] = True
        inside = ~space[1:-1]
        starts = np.flatnonzero(inside & (text_starts[1:-1] | space[:-2] | single[1:-1] | single[:-2]))
        ends = np.flatnonzero(inside & (text_ends[1:-1] | space[2:] | single[1:-1] | single[2:])) + 1
        text_of = np.searchsorted(self.offsets, starts, "right") - 1
        return Items(starts, ends, np.bincount(text_of, minlength=len(self)).astype(np.int64))


def _starts_of(lengths: np.ndarray) -> np.ndarray:
    return (np.cumsum(lengths) - lengths).astype(np.int64)


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """starts[i], starts[i] + 1, ... (counts[i] values each), end to end."""
    return np.arange(int(counts.sum())) + np.repeat(starts - _starts_of(counts), counts)


def ngrams(items: Items, n: int, whole_if_short: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of n consecutive items within each text, as (first item, stop item, runs per text).

    A text with fewer than n items has one run of all of them when
    ``whole_if_short``, otherwise none.
    """
    first_item = _starts_of(items.per_text)
    short = np.minimum(items.per_text, 1) if whole_if_short else 0
    counts = np.where(items.per_text >= n, items.per_text - n + 1, short)
    first = _ranges(first_item, counts)
    stop = first + n
    short = (items.per_text < n) & (counts > 0)
    stop[_starts_of(counts)[short]] = first_item[short] + items.per_text[short]
    return first, stop, counts


def same_spans(
    symbols: np.ndarray, starts: np.ndarray, ends: np.ndarray, other_starts: np.ndarray, other_ends: np.ndarray
) -> bool:
    """Whether every span ``symbols[start:end]`` equals its counterpart ``symbols[other_start:other_end]``."""
    lengths = ends - starts
    if not np.array_equal(lengths, other_ends - other_starts):
        return False
    return bool(np.array_equal(symbols[_ranges(starts, lengths)], symbols[_ranges(other_starts, lengths)]))


@functools.cache
def _cached_powers(base: int) -> np.ndarray:
    return _computed_powers(base, _CACHED_POWERS)


def _computed_powers(base: int, count: int) -> np.ndarray:
    powers = np.full(count, base, dtype=np.uint64)
    powers[0] = 1
    return np.cumprod(powers, out=powers)


def _powers(base: int, count: int) -> np.ndarray:
    """base**0, base**1, ... modulo 2**64 (count values)."""
    return _cached_powers(base)[:count] if count <= _CACHED_POWERS else _computed_powers(base, count)


def polynomial_hashes64(symbols: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each ``symbols[start:end]``, all at once (``polynomial_hash64`` for one).

    A polynomial in the symbols modulo 2**64, cut out of prefix sums, mixed
    with the length through the MurmurHash3 finaliser.
    """
    symbols = symbols.astype(np.uint64)
    powers, inverse_powers = _powers(_BASE, len(symbols) + 1), _powers(_BASE_INVERSE, len(symbols) + 1)
    prefix = np.zeros(len(symbols) + 1, dtype=np.uint64)
    np.cumsum(symbols * powers[:-1], out=prefix[1:])
    values = (prefix[ends] - prefix[starts]) * inverse_powers[starts]
    values += (ends - starts).astype(np.uint64) * np.uint64(_LENGTH_SALT)
    shift1, multiplier1, shift2, multiplier2, shift3 = _FMIX64
    values ^= values >> np.uint64(shift1)
    values *= np.uint64(multiplier1)
    values ^= values >> np.uint64(shift2)
    values *= np.uint64(multiplier2)
    values ^= values >> np.uint64(shift3)
    return values


def polynomial_hash64(symbols: list[int]) -> int:
    value, power = 0, 1
    for symbol in symbols:
        value = (value + symbol * power) & _MASK64
        power = (power * _BASE) & _MASK64
    value = (value + len(symbols) * _LENGTH_SALT) & _MASK64
    shift1, multiplier1, shift2, multiplier2, shift3 = _FMIX64
    value ^= value >> shift1
    value = (value * multiplier1) & _MASK64
    value ^= value >> shift2
    value = (value * multiplier2) & _MASK64
    return value ^ (value >> shift3)
