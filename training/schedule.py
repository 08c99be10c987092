"""The schedule of a run's global batches: the source and the rows of every step.

Guarantees, all independent of the number of loader workers and ranks:

- Every global batch comes from one source. Its source is drawn with
  probability ``n_i**alpha / sum(n_j**alpha)`` from a generator seeded by the
  run's seed and the step alone, so every rank draws the same.
- Each source is read in passes. A pass visits every row of the source exactly
  once in a seeded shuffled order, split into ``ceil(n / batch_size)`` batches
  of near-equal size; batches never straddle two passes, so no row meets itself
  in a batch. A global batch is cut into contiguous near-equal slices, one per
  rank.
- The rows of step ``k`` depend on nothing else, so a run resumed at step ``k``
  is given the batches an uninterrupted run would have had.
"""

import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from training.permutation import Permutation

# Seeds of the independent random streams derived from the run's seed.
_SOURCE_DRAW_STREAM = 0
_SHUFFLE_STREAM = 1


@dataclass(frozen=True)
class PlannedBatch:
    step: int
    source: int
    pass_index: int
    start: int  # positions in the pass's shuffled order
    stop: int

    def rank_slice(self, rank: int, world_size: int) -> tuple[int, int]:
        size = self.stop - self.start
        return self.start + size * rank // world_size, self.start + size * (rank + 1) // world_size


class Schedule:
    """Which rows form each global batch: a pure function of seed, sizes and batch size."""

    _BLOCK = 4096  # steps whose sources are drawn together

    def __init__(self, names: list[str], sizes: list[int], batch_size: int, seed: int, alpha: float):
        if batch_size < 1:
            raise ValueError(f"batch size must be positive, not {batch_size}")
        self.names = names
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.seed = seed
        weights = self.sizes.astype(np.float64) ** alpha
        self.probabilities = weights / weights.sum()
        self.batches_per_pass = -(-self.sizes // batch_size)

    def smallest_batch(self, source: int) -> int:
        return int(self.sizes[source] // self.batches_per_pass[source])

    def _drawn_sources(self, block: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, _SOURCE_DRAW_STREAM, block])
        return rng.choice(len(self.sizes), size=self._BLOCK, p=self.probabilities)

    def batches(self, start_step: int = 0) -> Iterator[PlannedBatch]:
        """Every global batch from ``start_step`` on, without end."""
        block = start_step // self._BLOCK
        drawn = np.zeros(len(self.sizes), dtype=np.int64)
        for earlier in range(block):
            drawn += np.bincount(self._drawn_sources(earlier), minlength=len(self.sizes))
        step = block * self._BLOCK
        while True:
            for source in self._drawn_sources(block):
                if step >= start_step:
                    yield self._planned(step, int(source), int(drawn[source]))
                drawn[source] += 1
                step += 1
            block += 1

    def _planned(self, step: int, source: int, index: int) -> PlannedBatch:
        rows, count = int(self.sizes[source]), int(self.batches_per_pass[source])
        pass_index, batch = divmod(index, count)
        return PlannedBatch(step, source, pass_index, batch * rows // count, (batch + 1) * rows // count)

    def shuffle(self, source: int, pass_index: int) -> Permutation:
        name_key = zlib.crc32(self.names[source].encode("utf-8"))
        return Permutation(int(self.sizes[source]), [self.seed, _SHUFFLE_STREAM, name_key, pass_index])
