"""Deterministic shard layout and encoding (Arrow IPC stream, IPC file or Parquet).

Which shard a row lands in depends only on its id and its source's total size,
and rows are sorted by id inside a shard, so the bytes of every shard are the
same whatever the number of workers or the order they saw the data in.
"""

import hashlib
import math
from collections import Counter
from dataclasses import dataclass

import pyarrow as pa

from mining.run_store import SHARD_EXTENSIONS, encode_table
from schemas import pairs as f
from schemas.manifest import SHARDS_DIR, Shard, SideLengths
from schemas.pairs import PAIR_SCHEMA, shard_row

_ROW_OVERHEAD_BYTES = 80  # offsets, ids, languages and scores
COMPRESSIONS = ("none", "zstd", "lz4")


@dataclass(frozen=True)
class ShardOptions:
    size_mb: float = 128.0  # target size of a shard
    compression: str = "none"  # Arrow IPC buffer (or Parquet) compression; none keeps IPC shards memory-mappable
    format: str = "stream"  # run_store.SHARD_EXTENSIONS: stream, file or parquet

    @property
    def target_bytes(self) -> int:
        return int(self.size_mb * 2**20)

    @property
    def arrow_compression(self) -> str | None:
        return None if self.compression == "none" else self.compression


def estimated_bytes(record: dict) -> int:
    texts = (record[f.QUERY], record[f.PASSAGE], *record[f.NEGATIVES])
    return _ROW_OVERHEAD_BYTES + sum(len(text.encode("utf-8", "surrogatepass")) for text in texts)


def shard_count(total_bytes: int, target_bytes: int) -> int:
    return max(1, math.ceil(total_bytes / target_bytes))


def shard_index(record_id: str, count: int) -> int:
    return int(record_id[:16], 16) % count


def shard_path(source: str, index: int, count: int, shard_format: str = "stream") -> str:
    return f"{SHARDS_DIR}/{source}/{source}-{index:05d}-of-{count:05d}{SHARD_EXTENSIONS[shard_format]}"


def encode_shard(
    records: list[dict], schema: pa.Schema = PAIR_SCHEMA, compression: str | None = None, shard_format: str = "stream"
) -> bytes:
    """Rows sorted by id, in ``shard_format``."""
    rows = sorted((shard_row(record, schema) for record in records), key=lambda row: row[f.ID])
    return encode_table(pa.Table.from_pylist(rows, schema=schema), compression, shard_format)


def shard_lengths(records: list[dict]) -> dict[str, SideLengths]:
    """Query and passage lengths per query language."""
    lengths: dict[str, SideLengths] = {}
    for record in records:
        sides = lengths.setdefault(record[f.QUERY_LANG], SideLengths())
        sides.query.add(len(record[f.QUERY]))
        sides.passage.add(len(record[f.PASSAGE]))
    return lengths


def shard_entry(path: str, source: str, records: list[dict], data: bytes) -> Shard:
    languages, pairs = Counter(), Counter()
    for record in records:
        languages.update({record[f.QUERY_LANG], record[f.PASSAGE_LANG]})
        pairs[record[f.QUERY_LANG], record[f.PASSAGE_LANG]] += 1
    language_pairs: dict[str, dict[str, int]] = {}
    for (query_lang, passage_lang), n in sorted(pairs.items()):
        language_pairs.setdefault(query_lang, {})[passage_lang] = n
    return Shard(
        path=path,
        rows=len(records),
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        source=source,
        languages=dict(sorted(languages.items())),
        language_pairs=language_pairs,
    )
