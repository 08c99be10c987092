"""Hard negatives: for each query, corpus passages an encoder ranks high that are not its positive.

They are taken from a window of ranks below the very top (``10:100``), where passages that in
fact answer the query (false negatives) have thinned out. Pure numpy; a candidate is
``(score, key, text)`` with ``key`` the passage's ``dedup.normalized_passage_key``. A query's
excluded keys are the positives of every row with the same normalised query, so neither a passage
equal to the row's positive nor another positive of its query is ever a candidate.
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
    excluded_keys: list[np.ndarray],
    corpus: np.ndarray,
    corpus_keys: np.ndarray,
    corpus_texts: list[str],
    depth: int,
) -> list[list[Candidate]]:
    """Each query's ``depth`` best passages of one corpus block, best first, its excluded keys left out.

    ``excluded_keys``: one array of passage keys per query. Scores and order depend on the passages
    alone, not on the block or the batch of queries.
    """
    excluded = np.array([np.isin(corpus_keys, keys) for keys in excluded_keys], dtype=bool)
    excluded = excluded.reshape(len(queries), len(corpus_keys))
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
