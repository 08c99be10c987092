"""Exact deduplication keys and the choice of the representative to keep."""

import functools
import hashlib
import sys
import unicodedata
from typing import Iterable, Iterator

from mining.records import Drop
from schemas import pairs as f

DUPLICATE_PAIR = "duplicate_pair"
DUPLICATE_PASSAGE = "duplicate_passage"

_FOLDED_CATEGORIES = frozenset(
    "Pc Pd Ps Pe Pi Pf Po Sm Sc Sk So Zs Zl Zp Cc Cf".split()
)


@functools.cache
def _fold_table() -> dict[int, None]:
    """Punctuation, symbols, separators, controls and format characters: removed before hashing."""
    return {
        code: None
        for code in range(sys.maxunicode + 1)
        if unicodedata.category(chr(code)) in _FOLDED_CATEGORIES
    }


def normalize_for_dedup(text: str) -> str:
    """Case, punctuation and whitespace differences do not make a new text."""
    return unicodedata.normalize("NFKC", text).casefold().translate(_fold_table())


def _digest(*texts: str) -> bytes:
    digest = hashlib.blake2b(digest_size=12)
    for text in texts:
        digest.update(normalize_for_dedup(text).encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return digest.digest()


def pair_key(record: dict) -> bytes:
    """Same key for pairs that are the same up to case, punctuation and spacing, in any source."""
    return _digest(record[f.QUERY], record[f.PASSAGE])


def passage_key(record: dict) -> bytes:
    """Same key for the same passage within one source and language pair.

    A sentence translated into many languages stays once per language pair.
    """
    return _digest(record[f.SOURCE], record[f.QUERY_LANG], record[f.PASSAGE])


def keep_smallest_id(records: Iterable[dict], reason: str, key: bytes) -> Iterator[dict | Drop]:
    """Yield every record but the one with the smallest id as a Drop, then that one.

    One pass and constant memory, so a group of any size can stream through.
    """
    best = None
    for record in records:
        if best is None:
            best = record
            continue
        if record[f.ID] < best[f.ID]:
            best, record = record, best
        yield Drop(record, reason, f"group {key.hex()}")
    if best is not None:
        yield best
