"""Exact deduplication keys and the choice of the representative to keep."""

import functools
import hashlib
import sys
import unicodedata
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np

from mining.records import Drop
from schemas import pairs as f

T = TypeVar("T")


# Punctuation, symbols, separators, controls and format characters: no text differs by them
# alone. Exact dedup removes them; near-dup shingles and decontamination split words at them.
IGNORED_CATEGORIES = frozenset("Pc Pd Ps Pe Pi Pf Po Sm Sc Sk So Zs Zl Zp Cc Cf".split())


@functools.cache
def ignored_characters() -> np.ndarray:
    """For every code point, whether its category is one of IGNORED_CATEGORIES."""
    return np.array(
        [unicodedata.category(chr(code)) in IGNORED_CATEGORIES for code in range(sys.maxunicode + 1)], dtype=bool
    )


@functools.cache
def _fold_table() -> dict[int, None]:
    return dict.fromkeys(np.flatnonzero(ignored_characters()).tolist())


def normalize_for_dedup(text: str) -> str:
    """Case, punctuation and whitespace differences do not make a new text."""
    return unicodedata.normalize("NFKC", text).casefold().translate(_fold_table())


def _encoded(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _digest(*texts: str) -> bytes:
    digest = hashlib.blake2b(digest_size=12)
    for text in texts:
        digest.update(_encoded(normalize_for_dedup(text)))
        digest.update(b"\x00")
    return digest.digest()


def _key64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


# Keys of passages. Each says which texts count as one passage; the derived pipelines need
# 64-bit integers (numpy arrays of keys), the mining shuffle takes bytes.


def pair_key(record: dict) -> bytes:
    """Same key for pairs that are the same up to case, punctuation and spacing, in any source."""
    return _digest(record[f.QUERY], record[f.PASSAGE])


def passage_key(record: dict) -> bytes:
    """Same key for the same passage, up to case, punctuation and spacing, within one source and
    language pair: a sentence translated into many languages stays once per language pair.
    """
    return _digest(record[f.SOURCE], record[f.QUERY_LANG], record[f.PASSAGE])


def exact_passage_key(passage: str) -> int:
    """Same key for the same passage text, character for character."""
    return _key64(_encoded(passage))


def normalized_passage_key(passage: str) -> int:
    """Same key for passages that are the same up to case, punctuation and spacing."""
    return _key64(_encoded(normalize_for_dedup(passage)))


def normalized_query_key(query: str) -> int:
    """Same key for queries that are the same up to case, punctuation and spacing, as in ``pair_key``."""
    return _key64(_encoded(normalize_for_dedup(query)))


def smallest_last(items: Iterable[T], id_of: Callable[[T], str]) -> Iterator[tuple[T, bool]]:
    """Yield (item, False) for every item but the one with the smallest id, then (that one, True).

    One pass and constant memory, so a group of any size can stream through.
    """
    best = None
    for item in items:
        if best is None:
            best = item
            continue
        if id_of(item) < id_of(best):
            best, item = item, best
        yield item, False
    if best is not None:
        yield best, True


def group_detail(key: bytes) -> str:
    """How a Drop names the duplicate group of ``key``."""
    return f"group {key.hex()}"


def keep_smallest_id(records: Iterable[dict], reason: str, key: bytes) -> Iterator[dict | Drop]:
    """Yield every record but the one with the smallest id as a Drop, then that one."""
    for record, kept in smallest_last(records, lambda record: record[f.ID]):
        yield record if kept else Drop(record, reason, group_detail(key))
