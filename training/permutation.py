"""A seeded shuffle of ``range(size)`` that needs no memory for the order itself.

Materialising ``np.random.permutation(n)`` costs 8 bytes per row in every
loader worker, gigabytes at pre-training scale. A keyed Feistel network is a
bijection on ``[0, 4**h)``; walking the cycle until the image falls inside
``[0, size)`` restricts it to a bijection on ``range(size)``. Any position can
be mapped on its own, which is what lets every worker and rank compute just its
slice of the order.
"""

import numpy as np

_ROUNDS = 6


def _mix(values: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser: a cheap, well-distributed 64-bit hash."""
    values = (values ^ (values >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    values = (values ^ (values >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))


class Permutation:
    def __init__(self, size: int, seed: list[int]):
        if size < 1:
            raise ValueError(f"cannot permute {size} elements")
        self.size = size
        self._half_bits = np.uint64(max(1, ((size - 1).bit_length() + 1) // 2))
        self._mask = np.uint64((1 << int(self._half_bits)) - 1)
        self._keys = np.random.default_rng(seed).integers(0, 2**63, size=_ROUNDS, dtype=np.uint64)

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        """The shuffled index at each position, as int64."""
        positions = np.asarray(positions, dtype=np.uint64)
        if positions.size and int(positions.max()) >= self.size:
            raise IndexError(f"position beyond the permutation's {self.size} elements")
        images = self._encrypt(positions)
        outside = images >= self.size
        while outside.any():
            images[outside] = self._encrypt(images[outside])
            outside = images >= self.size
        return images.astype(np.int64)

    def _encrypt(self, values: np.ndarray) -> np.ndarray:
        left, right = values >> self._half_bits, values & self._mask
        for key in self._keys:
            left, right = right, left ^ (_mix(right ^ key) & self._mask)
        return (left << self._half_bits) | right
