"""Hard negatives: for each query, corpus passages an encoder ranks high that are not its positive.

They are taken from a window of ranks below the very top (``10:100``), where passages that in
fact answer the query (false negatives) have thinned out. Pure numpy; a candidate is
``(score, key, text)`` with ``key`` the passage's ``dedup.normalized_passage_key``, so a passage
equal to the positive after normalisation is never a candidate.
"""

import heapq
from dataclasses import dataclass

import numpy as np

from mining import search

Candidate = tuple[float, int, str]


@dataclass(frozen=True)
class HardNegativeOptions:
    rank_window: str = "10:100"  # negatives come from these ranks of each query's search results
    num_negatives: int = 7  # negatives per row


def parse_rank_window(text: str) -> tuple[int, int]:
    """``FIRST:LAST``, 1-based ranks, both included."""
    first, sep, last = text.partition(":")
    try:
        window = int(first), int(last)
    except ValueError:
        window = None
    if not sep or window is None or not 1 <= window[0] <= window[1]:
        raise ValueError(f"--rank-window must be FIRST:LAST with 1 <= FIRST <= LAST, not {text!r}")
    return window


def _order(candidate: Candidate) -> tuple[float, int]:
    # Best score first; ties to the smaller key, so results never depend on the split of the work.
    return -candidate[0], candidate[1]


def block_candidates(
    queries: np.ndarray,
    positive_keys: np.ndarray,
    corpus: np.ndarray,
    corpus_keys: np.ndarray,
    corpus_texts: list[str],
    depth: int,
) -> list[list[Candidate]]:
    """Each query's ``depth`` best passages of one corpus block, best first, its positive excluded.

    Scores and order depend on the passages alone, not on the block or the batch of queries.
    """
    excluded = positive_keys[:, None] == corpus_keys[None, :]
    return [
        [(float(score), int(corpus_keys[index]), corpus_texts[index]) for index, score in zip(indices, scores)]
        for indices, scores in search.best_candidates(queries, corpus, corpus_keys, depth, excluded)
    ]


def merge_candidates(lists: list[list[Candidate]], depth: int) -> list[Candidate]:
    """The ``depth`` best of several best-first candidate lists."""
    return list(heapq.merge(*lists, key=_order))[:depth]


def choose_negatives(candidates: list[Candidate], window: tuple[int, int], count: int) -> list[str]:
    """The best ``count`` passages ranked inside ``window``."""
    first, last = window
    return [text for _, _, text in candidates[first - 1 : last][:count]]
