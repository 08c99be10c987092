"""MinHash signatures of a batch of texts at once, with numpy, interchangeable with datasketch's.

With the same ``num_perm``, ``seed`` and scheme, the signature of a text is
the ``hashvalues`` of ``datasketch.MinHash(num_perm, seed, scheme=...)``
updated with ``[s.encode("utf-8") for s in shingles(text, ...)]``. The
shingles are hashed with datasketch's default hash function (``sha1_hash32``)
unless ``hash="fast"``, which hashes them in numpy and matches datasketch
given ``hashfunc=fast_hash32``. Either way the signatures can go into
datasketch's ``MinHashLSH`` or ``LeanMinHash``.

Both of datasketch's 32-bit schemes are here: ``affine32`` (its default since
2.0) and ``legacy`` (``(a * h + b) mod (2**61 - 1)``, the only one before).

Every shingle of every text is one position in flat arrays, and each
permutation is one numpy pass over them.
"""

import functools
import hashlib
from dataclasses import dataclass
from typing import Literal

import numpy as np

from mining.shingles import NormalizedBatch, ngrams, polynomial_hash64, polynomial_hashes64, same_spans

Scheme = Literal["affine32", "legacy"]
ShingleHash = Literal["sha1", "fast"]
ShingleKind = Literal["char", "word"]

# datasketch's constants (datasketch/minhash.py).
_MERSENNE_PRIME = np.uint64((1 << 61) - 1)
_LEGACY_MAX_HASH = np.uint64((1 << 32) - 1)
_AFFINE32_MAX_HASH = np.uint32((1 << 32) - 1)
_FMIX32 = (np.uint32(16), np.uint32(0x85EBCA6B), np.uint32(13), np.uint32(0xC2B2AE35), np.uint32(16))

# Shingles permuted per numpy pass, so that the working arrays stay in cache.
_CHUNK_SHINGLES = 8192


@dataclass(frozen=True)
class Shingling:
    """What stands for a text: its character n-grams (any script) or its word n-grams, after normalising."""

    kind: ShingleKind = "char"
    n: int = 5

    def __post_init__(self):
        if self.kind not in ("char", "word") or self.n < 1:
            raise ValueError(f"shingles are char or word n-grams with n >= 1, not {self.kind} {self.n}")

    def __str__(self) -> str:
        return f"{self.kind} {self.n}-grams"

    def spans(self, batch: NormalizedBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(start, end) in ``batch.codepoints`` of every shingle, and shingles per text.

        A text shorter than n is one shingle; a text with nothing left after
        normalising has none.
        """
        if self.kind == "char":
            # A character is its own span, so an n-gram of characters is one already.
            return ngrams(batch.characters(), self.n, whole_if_short=True)
        words = batch.words()
        first, stop, counts = ngrams(words, self.n, whole_if_short=True)
        return words.starts[first], words.ends[stop - 1], counts


def shingles(text: str, shingling: Shingling = Shingling()) -> list[str]:
    """The shingles of one text, in order, repeats included."""
    batch = NormalizedBatch([text])
    starts, ends, _ = shingling.spans(batch)
    return [batch.joined[start:end] for start, end in zip(starts.tolist(), ends.tolist())]


def fast_hash32(data: bytes) -> int:
    """The ``hash="fast"`` value of one UTF-8 encoded shingle, as a ``hashfunc`` for datasketch."""
    return polynomial_hash64(list(map(ord, data.decode("utf-8", "surrogatepass")))) >> 32


def _sha1_hashes32(batch: NormalizedBatch, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """datasketch's default hash function, sha1_hash32: the first 4 bytes of SHA-1, little-endian.

    SHA-1 is by far the slowest step, so a shingle repeated in the batch is
    hashed once: the polynomial hash finds the repeats, and comparing their
    code points makes sure that they are.
    """
    keys = polynomial_hashes64(batch.codepoints, starts, ends)
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    if not same_spans(batch.codepoints, starts, ends, starts[first][inverse], ends[first][inverse]):
        first, inverse = np.arange(len(starts)), np.arange(len(starts))
    data, offsets, sha1 = batch.utf8, batch.utf8_offsets, hashlib.sha1
    spans = zip(offsets[starts[first]].tolist(), offsets[ends[first]].tolist())
    digests = b"".join([sha1(data[start:end]).digest()[:4] for start, end in spans])
    return np.frombuffer(digests, dtype="<u4").astype(np.uint32)[inverse]


def _fmix32(values: np.ndarray) -> np.ndarray:
    """datasketch's pre-mix of the input hash in the affine32 scheme (the MurmurHash3 finaliser)."""
    shift1, multiplier1, shift2, multiplier2, shift3 = _FMIX32
    values = values ^ (values >> shift1)
    values *= multiplier1
    values ^= values >> shift2
    values *= multiplier2
    return values ^ (values >> shift3)


@dataclass(frozen=True)
class MinHasher:
    """Signatures of ``num_perm`` permutations, datasketch's for the same seed and scheme."""

    num_perm: int = 128
    seed: int = 1
    scheme: Scheme = "affine32"
    hash: ShingleHash = "sha1"
    shingling: Shingling = Shingling()

    def __post_init__(self):
        if self.scheme not in ("affine32", "legacy") or self.hash not in ("sha1", "fast") or self.num_perm < 1:
            raise ValueError(f"unsupported MinHash setting: {self}")

    @functools.cached_property
    def permutations(self) -> tuple[np.ndarray, np.ndarray]:
        """(a, b), drawn from ``np.random.RandomState(seed)`` in datasketch's order."""
        generator = np.random.RandomState(self.seed)
        if self.scheme == "legacy":
            pairs = [
                (
                    generator.randint(1, _MERSENNE_PRIME, dtype=np.uint64),
                    generator.randint(0, _MERSENNE_PRIME, dtype=np.uint64),
                )
                for _ in range(self.num_perm)
            ]
            a, b = np.array(pairs, dtype=np.uint64).T
            return np.ascontiguousarray(a), np.ascontiguousarray(b)
        a = generator.randint(0, 1 << 31, self.num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
        b = generator.randint(0, 1 << 32, self.num_perm, dtype=np.uint32)
        return a, b

    def signatures(self, texts: list[str]) -> np.ndarray:
        """One row of ``num_perm`` values per text: uint32 for affine32, uint64 for legacy, as datasketch.

        A text without shingles keeps datasketch's initial value, the maximum, everywhere.
        """
        batch = NormalizedBatch(texts)
        starts, ends, counts = self.shingling.spans(batch)
        if self.hash == "sha1":
            hashes = _sha1_hashes32(batch, starts, ends)
        else:
            hashes = (polynomial_hashes64(batch.codepoints, starts, ends) >> np.uint64(32)).astype(np.uint32)
        if self.scheme == "legacy":
            hashes = hashes.astype(np.uint64)
            result = np.full((len(texts), self.num_perm), _LEGACY_MAX_HASH, dtype=np.uint64)
        else:
            hashes = _fmix32(hashes)
            result = np.full((len(texts), self.num_perm), _AFFINE32_MAX_HASH, dtype=np.uint32)
        shingled = np.flatnonzero(counts)
        bounds = np.concatenate(([0], np.cumsum(counts[shingled])))
        chunk = max(_CHUNK_SHINGLES, int(counts.max(initial=0)))
        buffer = np.empty(self.num_perm * chunk, dtype=result.dtype)
        first = 0
        while first < len(shingled):
            # Whole texts per chunk, so that each text's minimum is taken in one place.
            last = max(int(np.searchsorted(bounds, bounds[first] + chunk, "right")) - 1, first + 1)
            begin, end = bounds[first], bounds[last]
            out = buffer[: self.num_perm * (end - begin)].reshape(self.num_perm, end - begin)
            permuted = self._permute(hashes[begin:end], out)
            result[shingled[first:last]] = np.minimum.reduceat(permuted, bounds[first:last] - begin, axis=1).T
            first = last
        return result

    def _permute(self, hashes: np.ndarray, out: np.ndarray) -> np.ndarray:
        """(num_perm, len(hashes)): permutation k of every hash in row k."""
        a, b = self.permutations
        np.multiply(a[:, None], hashes[None, :], out=out)
        out += b[:, None]
        if self.scheme == "legacy":
            out %= _MERSENNE_PRIME
            out &= _LEGACY_MAX_HASH
        return out


def optimal_bands(threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) with bands * rows <= num_perm minimising the weighted false-positive and
    false-negative areas under the collision curve, as datasketch's ``_optimal_param``.

    The collision probability 1 - (1 - s**r)**b is a polynomial of degree
    b * r <= num_perm in s, so Gauss-Legendre quadrature with num_perm // 2 + 1
    nodes integrates it exactly.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"the Jaccard threshold must be between 0 and 1, not {threshold}")
    combinations = [(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)]
    bands, rows = (np.array(values, dtype=np.float64)[:, None] for values in zip(*combinations))
    nodes, weights = np.polynomial.legendre.leggauss(num_perm // 2 + 1)

    def area(low: float, high: float, collision_counts: bool) -> np.ndarray:
        s = (high - low) / 2 * nodes + (high + low) / 2
        collides = 1 - (1 - s**rows) ** bands
        return ((collides if collision_counts else 1 - collides) * weights).sum(axis=1) * (high - low) / 2

    error = area(0.0, threshold, True) * fp_weight + area(threshold, 1.0, False) * fn_weight
    # The first minimum in datasketch's loop order, as its strict '<' keeps.
    return combinations[int(np.argmin(error))]
