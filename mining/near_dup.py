"""Near-duplicate removal: MinHash-LSH buckets, then connected components by star contraction.

Pairs whose compared texts share a band of their MinHash signature land in
one bucket; each bucket links its members to its smallest id. The linked
pairs form a graph, whose connected components are the clusters: each keeps
its smallest id and drops the rest. Components are found by alternating
large-star and small-star operations (Kiveris et al., "Connected Components
in MapReduce and Beyond", 2014), each a grouping by node, so that no worker
ever holds more than one node's neighbours.

An edge is a ``(larger id, smaller id)`` tuple. The groups handed to these
functions are iterated twice (Beam's grouped values are re-iterable) so that
a node with many neighbours is never held in memory.
"""

import hashlib
from dataclasses import dataclass
from functools import cached_property
from typing import Iterable, Iterator, Literal

import numpy as np

from mining.minhash import MinHasher, Shingling, optimal_bands
from schemas import pairs as f


Edge = tuple[str, str]


@dataclass(frozen=True)
class NearDupOptions:
    threshold: float = 0.8
    num_perm: int = 128
    seed: int = 1
    shingling: Shingling = Shingling()
    # "fast" hashes shingles in numpy, several times sha1's speed; datasketch computes the same
    # signatures given hashfunc=mining.minhash.fast_hash32, so they stay interchangeable.
    hash: Literal["sha1", "fast"] = "fast"
    # "passage": passages, in the sources where a repeated passage is a
    # duplicate (see --passage-dedup); elsewhere, where one passage answers
    # many queries, query and passage must both be near-duplicates.
    # "pair": query and passage as one text, in every source.
    text: Literal["passage", "pair"] = "passage"
    # "source": pairs of one source and language pair are compared; "all":
    # pairs of one language pair, whatever their source.
    scope: Literal["source", "all"] = "source"
    rounds: int = 8

    def __post_init__(self):
        if self.text not in ("passage", "pair") or self.scope not in ("source", "all") or self.rounds < 1:
            raise ValueError(f"unsupported near-duplicate setting: {self}")

    @cached_property
    def bands(self) -> tuple[int, int]:
        """(bands, rows) of the LSH index for the threshold."""
        return optimal_bands(self.threshold, self.num_perm)

    def hasher(self) -> MinHasher:
        return MinHasher(self.num_perm, self.seed, "affine32", self.hash, self.shingling)

    def describe(self) -> dict:
        bands, rows = self.bands
        return {
            "threshold": self.threshold, "num_perm": self.num_perm, "bands": bands, "rows_per_band": rows,
            "seed": self.seed, "scheme": "affine32", "hash": self.hash, "shingles": str(self.shingling),
            "text": self.text, "scope": self.scope, "rounds": self.rounds,
        }


def compared_texts(record: dict, options: NearDupOptions, passage_dedup: bool) -> tuple[str, ...]:
    """The texts whose signatures make a record's bucket keys: a band of each goes into every key,
    so that records share a bucket only where all of them are alike."""
    if options.text == "pair":
        return (f"{record[f.QUERY]}\n{record[f.PASSAGE]}",)
    if passage_dedup:
        return (record[f.PASSAGE],)
    return record[f.QUERY], record[f.PASSAGE]


def _scope(record: dict, options: NearDupOptions, texts: int) -> bytes:
    parts = (str(texts), record[f.QUERY_LANG], record[f.PASSAGE_LANG])
    if options.scope == "source":
        parts = (record[f.SOURCE], *parts)
    return hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=16).digest()


def band_keys(
    records: list[dict], hasher: MinHasher, options: NearDupOptions, passage_dedup_by_source: dict[str, bool]
) -> Iterator[tuple[bytes, str]]:
    """(bucket key, id) for every band of every record; a record with a text left without
    shingles by normalising has none."""
    compared = [compared_texts(record, options, passage_dedup_by_source[record[f.SOURCE]]) for record in records]
    signatures = hasher.signatures([text for texts in compared for text in texts])
    unshingled = (signatures == np.iinfo(signatures.dtype).max).all(axis=1)
    rows_bytes = signatures.astype(signatures.dtype.newbyteorder("<")).view(np.uint8)
    bands, rows = options.bands
    band_bytes = rows * signatures.itemsize
    first = 0
    for record, texts in zip(records, compared, strict=True):
        these = slice(first, first + len(texts))
        first += len(texts)
        if unshingled[these].any():
            continue
        scope = _scope(record, options, len(texts))
        data = rows_bytes[these]
        for band in range(bands):
            chunk = data[:, band * band_bytes : (band + 1) * band_bytes].tobytes()
            key = hashlib.blake2b(scope + band.to_bytes(2, "little") + chunk, digest_size=16).digest()
            yield key, record[f.ID]


def bucket_edges(ids: Iterable[str]) -> Iterator[Edge]:
    """Every member of a bucket linked to the bucket's smallest id."""
    smallest = min(ids)
    for record_id in ids:
        if record_id != smallest:
            yield record_id, smallest


def large_star(node: str, neighbours: Iterable[str]) -> Iterator[Edge]:
    """Link every larger neighbour of ``node`` to the smallest of ``node`` and its neighbours."""
    smallest = min(min(neighbours), node)
    for neighbour in neighbours:
        if neighbour > node:
            yield neighbour, smallest


def small_star(node: str, smaller_neighbours: Iterable[str]) -> Iterator[Edge]:
    """Link ``node`` and its smaller neighbours to the smallest of them."""
    smallest = min(smaller_neighbours)
    for neighbour in smaller_neighbours:
        if neighbour != smallest:
            yield neighbour, smallest
    yield node, smallest


def cluster_of(smaller_neighbours: Iterable[str]) -> tuple[str, bool]:
    """A node's cluster id (its smallest neighbour) and whether the contraction had finished there.

    Once finished, every node but a component's smallest has exactly one
    smaller neighbour, the smallest. A node that still has several may leave
    a component with more than one node that no smaller neighbour drops.
    """
    smallest = min(smaller_neighbours)
    return smallest, all(neighbour == smallest for neighbour in smaller_neighbours)
