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

_MASK64 = (1 << 64) - 1
# Odd, so invertible modulo 2**64: a span's hash is cut out of prefix sums.
_BASE = 0x9E3779B97F4A7C15
_BASE_INVERSE = pow(_BASE, -1, 1 << 64)
_LENGTH_SALT = 0xC2B2AE3D27D4EB4F
_FMIX64 = (33, 0xFF51AFD7ED558CCD, 33, 0xC4CEB9FE1A85EC53, 33)


@functools.cache
def _unspaced_table() -> np.ndarray:
    table = np.zeros(sys.maxunicode + 1, dtype=bool)
    for first, last in _UNSPACED_RANGES:
        table[first : last + 1] = True
    return table


def _folded(text: str) -> str:
    return text.casefold() if text.isascii() else unicodedata.normalize("NFKC", text).casefold()


@dataclass(frozen=True)
class Items:
    """Spans of the batch (characters, words or n-grams of them), in text order."""

    starts: np.ndarray
    ends: np.ndarray
    per_text: np.ndarray


class NormalizedBatch:
    """The normalised texts end to end: ``codepoints``, with each text's ``offsets`` and ``lengths``."""

    def __init__(self, texts: list[str]):
        folded = [_folded(text) for text in texts]
        raw = np.frombuffer("".join(folded).encode("utf-32-le", "surrogatepass"), dtype="<u4")
        raw_lengths = np.fromiter(map(len, folded), dtype=np.int64, count=len(folded))
        raw_offsets = _starts_of(raw_lengths)
        text_of = np.repeat(np.arange(len(texts)), raw_lengths)
        separator = ignored_characters()[raw]
        word_char = ~separator
        word_chars_before = np.cumsum(word_char) - word_char
        in_text_before = word_chars_before - word_chars_before[raw_offsets[text_of]]
        word_follows = np.zeros(len(raw), dtype=bool)
        word_follows[:-1] = word_char[1:]
        word_follows[(raw_offsets + raw_lengths - 1)[raw_lengths > 0]] = False
        # A run of separators inside a text becomes its last character, as a space; at either end it goes.
        keep = word_char | (word_follows & (in_text_before > 0))
        self.codepoints = np.where(separator, np.uint32(_SPACE), raw.astype(np.uint32))[keep]
        self.lengths = np.bincount(text_of[keep], minlength=len(texts)).astype(np.int64)
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
    within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(starts, counts) + within


def ngrams(items: Items, n: int, whole_if_short: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of n consecutive items within each text, as (first item, stop item, runs per text).

    A text with fewer than n items has one run of all of them when
    ``whole_if_short``, otherwise none.
    """
    first_item = _starts_of(items.per_text)
    short = np.minimum(items.per_text, 1) if whole_if_short else 0
    counts = np.where(items.per_text >= n, items.per_text - n + 1, short)
    first = _ranges(first_item, counts)
    stop = np.minimum(first + n, np.repeat(first_item + items.per_text, counts))
    return first, stop, counts


def same_spans(
    symbols: np.ndarray, starts: np.ndarray, ends: np.ndarray, other_starts: np.ndarray, other_ends: np.ndarray
) -> bool:
    """Whether every span ``symbols[start:end]`` equals its counterpart ``symbols[other_start:other_end]``."""
    lengths = ends - starts
    if not np.array_equal(lengths, other_ends - other_starts):
        return False
    return bool(np.array_equal(symbols[_ranges(starts, lengths)], symbols[_ranges(other_starts, lengths)]))


def polynomial_hashes64(symbols: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each ``symbols[start:end]``, all at once (``polynomial_hash64`` for one).

    A polynomial in the symbols modulo 2**64, cut out of prefix sums, mixed
    with the length through the MurmurHash3 finaliser.
    """
    symbols = symbols.astype(np.uint64)
    powers = np.full(len(symbols) + 1, _BASE, dtype=np.uint64)
    powers[0] = 1
    np.cumprod(powers, out=powers)
    inverse_powers = np.full(len(symbols) + 1, _BASE_INVERSE, dtype=np.uint64)
    inverse_powers[0] = 1
    np.cumprod(inverse_powers, out=inverse_powers)
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
