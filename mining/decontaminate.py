"""Decontamination: pairs that leak evaluation data are dropped.

A pair is contaminated when its query or passage, normalised as near-dup
shingles are (``mining.shingles``), shares an n-gram of 13 words with an
excluded text, or equals one. In scripts written without spaces (CJK, Thai,
...) each character counts as a word. The excluded texts are reduced to
sorted arrays of 64-bit hashes, looked up a whole batch at a time.

Excluded files, told apart by name (after a compression suffix):
``.json`` SQuAD/XQuAD (contexts and questions), ``.tsv`` MIRACL-style topics
(``id<TAB>text``), anything else one text per line (Tatoeba's aligned files).
"""

import posixpath
from dataclasses import dataclass
from typing import BinaryIO, Iterator

import numpy as np

from mining import formats
from mining.lines import iter_lines
from mining.records import Drop
from mining.sources.base import Malformed
from mining.shingles import NormalizedBatch, ngrams, polynomial_hashes64
from schemas import pairs as f
from schemas.reasons import CONTAMINATED

NGRAM_WORDS = 13

_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".lzma")
_MAX_LINE_BYTES = 1 << 24


class BenchmarkFileError(ValueError):
    """An excluded file that is not what its name says; said in one line naming the file."""


def excluded_texts(path: str, stream: BinaryIO) -> Iterator[str]:
    """The texts of one benchmark file."""
    name = path.lower()
    for suffix in _COMPRESSION_SUFFIXES:
        name = name.removesuffix(suffix)
    extension = posixpath.splitext(name)[1]
    if extension == ".json":
        yield from _squad_texts(path, stream.read())
        return
    for line in iter_lines(stream, _MAX_LINE_BYTES):
        if line.too_long:
            raise BenchmarkFileError(f"{path}:{line.number}: a line over {_MAX_LINE_BYTES} bytes is no benchmark text")
        text = line.data.decode("utf-8", "replace")
        if extension == ".tsv":
            text = text.split("\t", 1)[-1]
        if text.strip():
            yield text


def _squad_texts(path: str, data: bytes) -> Iterator[str]:
    """Contexts and questions, unanswerable ones too: a benchmark leaks through any of its texts."""
    try:
        for context, questions in formats.whole_squad(data):
            yield context
            yield from (question.text for question in questions)
    except Malformed as error:
        raise BenchmarkFileError(f"{path} is not SQuAD JSON: {error.detail}") from None


@dataclass(frozen=True)
class _Fingerprints:
    """Hashes of a batch of texts: every n-gram (with the text it is in) and every whole text."""

    batch: NormalizedBatch
    unit_starts: np.ndarray
    unit_ends: np.ndarray
    ngram_first: np.ndarray
    ngram_stop: np.ndarray
    ngram_text: np.ndarray
    ngram_hashes: np.ndarray
    text_hashes: np.ndarray
    has_units: np.ndarray

    @classmethod
    def of(cls, texts: list[str], n: int) -> "_Fingerprints":
        batch = NormalizedBatch(texts)
        units = batch.words(unspaced_characters=True)
        # Units are hashed first, so that an n-gram's hash ignores how its units were spaced.
        unit_hashes = polynomial_hashes64(batch.codepoints, units.starts, units.ends)
        first, stop, counts = ngrams(units, n, whole_if_short=False)
        first_unit = np.cumsum(units.per_text) - units.per_text
        return cls(
            batch, units.starts, units.ends, first, stop,
            np.repeat(np.arange(len(texts)), counts),
            polynomial_hashes64(unit_hashes, first, stop),
            polynomial_hashes64(unit_hashes, first_unit, first_unit + units.per_text),
            units.per_text > 0,
        )

    def ngram_text_of(self, index: int) -> str:
        start, end = self.unit_starts[self.ngram_first[index]], self.unit_ends[self.ngram_stop[index] - 1]
        return self.batch.joined[start:end]


def _members(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    if not len(sorted_set):
        return np.zeros(len(values), dtype=bool)
    found = np.minimum(np.searchsorted(sorted_set, values), len(sorted_set) - 1)
    return sorted_set[found] == values


@dataclass(frozen=True)
class ExcludedSet:
    """Sorted, unique hashes of the excluded texts' n-grams and of the texts themselves."""

    ngrams: np.ndarray
    texts: np.ndarray
    n: int = NGRAM_WORDS

    @classmethod
    def empty(cls, n: int = NGRAM_WORDS) -> "ExcludedSet":
        return cls(np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.uint64), n)

    @classmethod
    def of(cls, texts: list[str], n: int = NGRAM_WORDS) -> "ExcludedSet":
        prints = _Fingerprints.of(texts, n)
        return cls(np.unique(prints.ngram_hashes), np.unique(prints.text_hashes[prints.has_units]), n)

    def union(self, *others: "ExcludedSet") -> "ExcludedSet":
        sets = (self, *others)
        if any(other.n != self.n for other in others):
            raise ValueError("excluded sets of different n-gram sizes do not mix")
        ngrams = np.unique(np.concatenate([s.ngrams for s in sets]))
        return ExcludedSet(ngrams, np.unique(np.concatenate([s.texts for s in sets])), self.n)

    def __len__(self) -> int:
        return len(self.ngrams) + len(self.texts)


def drop_contaminated(records: list[dict], excluded: ExcludedSet) -> tuple[list[dict], list[Drop]]:
    """Pairs whose query or passage shares an n-gram with, or equals, an excluded text are dropped."""
    if not records or not len(excluded):
        return records, []
    sides = (f.QUERY, f.PASSAGE)
    prints = _Fingerprints.of([record[side] for side in sides for record in records], excluded.n)
    equal = _members(prints.text_hashes, excluded.texts) & prints.has_units
    first_shared = {}
    for index in np.flatnonzero(_members(prints.ngram_hashes, excluded.ngrams)).tolist():
        first_shared.setdefault(int(prints.ngram_text[index]), index)
    kept, drops = [], []
    for position, record in enumerate(records):
        detail = None
        for side_index, side in enumerate(sides):
            text_index = side_index * len(records) + position
            if equal[text_index]:
                detail = f"{side} equals an excluded text"
            elif text_index in first_shared:
                detail = f'{side} shares "{prints.ngram_text_of(first_shared[text_index])}" with an excluded text'
            if detail:
                break
        if detail:
            drops.append(Drop(record, CONTAMINATED, detail))
        else:
            kept.append(record)
    return kept, drops
