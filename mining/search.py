"""Exact nearest-neighbour search whose results depend neither on how the corpus is cut into blocks
nor on how the queries are batched.

A float32 matrix product is fast, but BLAS sums each dot product in an order that depends on
the shapes of the matrices, so the score of one pair can differ in its last bits between two cuts
of the same data, and near-ties flip. The product therefore only selects candidates: every pair
whose fast score lies within twice the product's error bound of the k-th best is re-scored with
``pair_scores``, whose value depends on the two vectors alone, and ranked by (score, key).
"""

import numpy as np

# The rounding error a float32 dot product may gather per term, relative to |q| |p|: the classic
# bound is d * 2**-24 * |q| * |p| for d terms (FMA and blocked sums stay within it); four times that.
_EPSILON = 2 * np.finfo(np.float32).eps


def pair_scores(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Dot products of matching rows, in float64, each a function of its two vectors alone.

    A product of two float32 numbers is exact in float64, and a running sum adds the products in
    one fixed order that no vectorisation may change (a reduction such as ``sum`` may reorder).
    """
    products = left.astype(np.float64) * right.astype(np.float64)
    if products.shape[-1] == 0:
        return np.zeros(products.shape[:-1])
    return np.cumsum(products, axis=-1)[..., -1]


def error_bound(queries: np.ndarray, corpus: np.ndarray) -> float:
    """A bound on |fast score - ``pair_scores``| for every pair of a query and a corpus row."""
    if not len(queries) or not len(corpus):
        return 0.0
    largest = float(np.linalg.norm(queries, axis=1).max()) * float(np.linalg.norm(corpus, axis=1).max())
    return queries.shape[1] * _EPSILON * largest


def best_candidates(
    queries: np.ndarray, corpus: np.ndarray, keys: np.ndarray, k: int, excluded: np.ndarray | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each query's ``k`` best corpus rows as (row indices, scores), best first, ties to the smaller key.

    Scores come from ``pair_scores``. ``excluded`` (queries x corpus, bool) marks pairs never
    returned; a query with fewer than ``k`` other rows gets them all.
    """
    fast = queries @ corpus.T
    if excluded is not None:
        fast[excluded] = -np.inf
    k = min(k, corpus.shape[0])
    if k == 0:
        return [(np.zeros(0, dtype=np.int64), np.zeros(0)) for _ in range(len(queries))]
    kth_best = np.partition(fast, fast.shape[1] - k, axis=1)[:, fast.shape[1] - k]
    margin = 2 * error_bound(queries, corpus)
    results = []
    for query, row, threshold in zip(queries, fast, kth_best, strict=True):
        picked = np.flatnonzero((row >= threshold - margin) & np.isfinite(row))
        scores = pair_scores(query[None, :], corpus[picked])
        order = np.lexsort((keys[picked], -scores))[:k]
        results.append((picked[order], scores[order]))
    return results
