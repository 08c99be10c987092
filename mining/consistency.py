"""The consistency filter of the E5 recipe: keep a pair only if, for its query, its own passage
ranks among the top k of a random pool of passages from the same data.

Pure numpy: embeddings come in, ranks and drop decisions go out.
"""

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from mining import search
from mining.records import Drop
from schemas import pairs as f
from schemas.reasons import INCONSISTENT

# The most query x pool scores held at once.
SCORE_BLOCK = 1 << 22
# The most pairs re-scored exactly at once (their float64 products are held).
CLOSE_PAIRS_AT_ONCE = 1 << 14


@dataclass(frozen=True)
class ConsistencyOptions:
    pool_size: int = 10_000  # passages sampled (seeded) from the input that a pair's passage must outrank
    top_k: float = 2  # keep a pair whose passage ranks this high (1 = best); below 1, a fraction of the pool
    seed: int = 0  # seed of the pool sample


def pool_key(seed: int, record_id: str) -> int:
    """The pool is the rows with the smallest keys: a seeded sample that any split of the work agrees on."""
    digest = hashlib.blake2b(f"{seed}\x1f{record_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def resolve_top_k(top_k: float, pool_size: int) -> int:
    """``--top-k``: a rank when >= 1, else a fraction of the pool (at least 1)."""
    if not math.isfinite(top_k):
        raise ValueError(f"--top-k must be a positive integer or a fraction below 1, not {top_k}")
    if top_k <= 0:
        raise ValueError(f"--top-k must be positive, not {top_k}")
    if top_k >= 1:
        if top_k != int(top_k):
            raise ValueError(f"--top-k must be an integer or a fraction below 1, not {top_k}")
        return int(top_k)
    return max(1, math.ceil(top_k * pool_size))


def passage_ranks(
    queries: np.ndarray,
    passages: np.ndarray,
    passage_keys: np.ndarray,
    pool: np.ndarray,
    pool_keys: np.ndarray,
    block: int = SCORE_BLOCK,
) -> np.ndarray:
    """For each pair i, the rank (1 = best) of ``passages[i]`` for ``queries[i]`` among itself and the pool.

    Embeddings are normalised rows, so the dot product is the cosine. A pool entry whose key
    (``dedup.exact_passage_key``) equals the pair's passage key is the pair's own passage and is
    skipped, whatever its id: a SQuAD context answers many questions; ties go to the
    pair's passage. The pool is scanned in blocks of at most ``block`` scores; a pool entry
    whose fast score is too close to call is compared by ``search.pair_scores``, so a rank never
    depends on the blocks or the batch.
    """
    own = search.pair_scores(queries, passages)[:, None]
    rows = max(1, block // max(1, len(queries)))
    better = np.zeros(len(queries), dtype=np.int64)
    for start in range(0, len(pool), rows):
        block_pool = pool[start : start + rows]
        scores = queries @ block_pool.T
        competitors = passage_keys[:, None] != pool_keys[None, start : start + rows]
        bound = search.error_bound(queries, block_pool)
        better += np.count_nonzero((scores > own + bound) & competitors, axis=1)
        close_queries, close_entries = np.nonzero((np.abs(scores - own) <= bound) & competitors)
        # In pieces: an encoder giving every text one vector makes every pair too close to call.
        for piece in range(0, len(close_queries), CLOSE_PAIRS_AT_ONCE):
            chosen = close_queries[piece : piece + CLOSE_PAIRS_AT_ONCE]
            exact = search.pair_scores(queries[chosen], block_pool[close_entries[piece : piece + CLOSE_PAIRS_AT_ONCE]])
            np.add.at(better, chosen, exact > own[chosen, 0])
    return better + 1


def judge(record: dict, rank: int, top_k: int, pool_size: int) -> dict | Drop:
    """The record with its rank; a Drop when the rank is worse than ``top_k``."""
    ranked = {**record, f.CONSISTENCY_RANK: int(rank)}
    if rank <= top_k:
        return ranked
    return Drop(ranked, INCONSISTENT, f"rank {rank} among {pool_size} pool passages and its own, top-k {top_k}")
