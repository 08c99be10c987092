"""Hard negatives: for each query, corpus passages an encoder ranks high that are not its positive.

They are taken from a window of ranks below the very top (``10:100``), where passages that in
fact answer the query (false negatives) have thinned out; optionally, as sentence-transformers'
``mine_hard_negatives`` does, candidates of the window scoring above ``max_score`` or within
``relative_margin`` of the positive's score are skipped as likely false negatives. Pure numpy; a candidate is
``(score, key, text)`` with ``key`` the passage's ``dedup.normalized_passage_key``; the search handles a query's
candidates without their texts, as one ``CANDIDATES`` array, best first. A query's
excluded keys are the positives of every row with the same normalised query, so neither a passage
equal to the row's positive nor another positive of its query is ever a candidate.
"""

from collections import Counter
from dataclasses import dataclass

import numpy as np

from mining import search
from schemas.reasons import ABOVE_MAX_SCORE, WITHIN_RELATIVE_MARGIN

Candidate = tuple[float, int, str]
# A query's candidates as the search ranks them: a compact array, so that millions of them cost no Python objects.
CANDIDATES = np.dtype([("score", "<f8"), ("key", "<u8")])


@dataclass(frozen=True)
class HardNegativeOptions:
    rank_window: str = "10:100"  # negatives come from these ranks of each query's search results
    num_negatives: int = 7  # negatives per row
    max_score: float | None = None  # candidates scoring above it are skipped; None: no ceiling
    # Candidates scoring above (1 - relative_margin) x the positive's score are skipped; None: no margin.
    relative_margin: float | None = None


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


def block_candidate_arrays(
    queries: np.ndarray, excluded_keys: list[np.ndarray], corpus: np.ndarray, corpus_keys: np.ndarray, depth: int
) -> list[np.ndarray]:
    """Each query's ``depth`` best passages of one corpus block as a ``CANDIDATES`` array, best first (ties to the
    smaller key, so results never depend on the split of the work), its excluded keys left out.

    ``excluded_keys``: one array of passage keys per query. Scores and order depend on the passages
    alone, not on the block or the batch of queries.
    """
    excluded = np.array([np.isin(corpus_keys, keys) for keys in excluded_keys], dtype=bool)
    excluded = excluded.reshape(len(queries), len(corpus_keys))
    results = []
    for indices, scores in search.best_candidates(queries, corpus, corpus_keys, depth, excluded):
        candidates = np.empty(len(indices), dtype=CANDIDATES)
        candidates["score"], candidates["key"] = scores, corpus_keys[indices]
        results.append(candidates)
    return results


def merge_candidate_arrays(arrays: list[np.ndarray], depth: int) -> np.ndarray:
    """The ``depth`` best of several ``CANDIDATES`` arrays (of disjoint blocks), best first, ties to the smaller key:
    the order of one search over all the blocks."""
    joined = np.concatenate(arrays)
    return joined[np.lexsort((joined["key"], -joined["score"]))[:depth]]


def with_texts(candidates: np.ndarray, texts: dict[int, str]) -> list[Candidate]:
    """A ``CANDIDATES`` array as candidates, each with its passage's text (``texts``: by key)."""
    return [(score, key, texts[key]) for score, key in zip(candidates["score"].tolist(), candidates["key"].tolist())]


def positive_score(query: np.ndarray, positive: np.ndarray) -> float:
    """The row's own pair scored exactly as the search scores its candidates."""
    return float(search.pair_scores(query, positive))


def false_negative_reason(
    score: float, max_score: float | None, relative_margin: float | None, positive: float | None
) -> str | None:
    """Why a candidate scoring ``score`` is likely a false negative, or None; the ceiling is checked first."""
    if max_score is not None and score > max_score:
        return ABOVE_MAX_SCORE
    if relative_margin is not None and score > (1 - relative_margin) * positive:
        return WITHIN_RELATIVE_MARGIN
    return None


def choose_negatives(
    candidates: list[Candidate],
    window: tuple[int, int],
    count: int,
    max_score: float | None = None,
    relative_margin: float | None = None,
    positive: float | None = None,
) -> tuple[list[str], Counter[str]]:
    """The best ``count`` passages ranked inside ``window`` that no filter skips, and how many of the
    window's candidates each filter skipped. ``positive``: the row's own score, for ``relative_margin``.

    Ranks count every candidate, skipped or not, as in sentence-transformers.
    """
    first, last = window
    negatives = []
    skipped = Counter()
    for score, _, text in candidates[first - 1 : last]:
        reason = false_negative_reason(score, max_score, relative_margin, positive)
        if reason:
            skipped[reason] += 1
        elif len(negatives) < count:
            negatives.append(text)
    return negatives, skipped
