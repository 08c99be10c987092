"""Deterministic shard layout and encoding (Arrow IPC stream, IPC file or Parquet).

Which shard a row lands in depends only on its id and its source's total size,
and rows are sorted by id inside a shard, so the bytes of every shard are the
same whatever the number of workers or the order they saw the data in.
"""

import hashlib
import io
import math
import pickle
from collections import Counter
from dataclasses import dataclass
from typing import BinaryIO, Iterable

import pyarrow as pa

from mining.run_store import ROWS_PER_RECORD_BATCH, SHARD_EXTENSIONS, write_tables
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
    records: Iterable[dict], schema: pa.Schema = PAIR_SCHEMA, compression: str | None = None,
    shard_format: str = "stream",
) -> bytes:
    """Rows sorted by id, in ``shard_format``: the bytes write_shard writes."""
    stream = io.BytesIO()
    _write_rows((packed_row(record, schema) for record in records), stream, schema, compression, shard_format)
    return stream.getvalue()


def packed_row(record: dict, schema: pa.Schema = PAIR_SCHEMA) -> tuple[str, bytes]:
    """A record as it waits for its shard: its id and its shard row, pickled, which holds it in a fraction of
    the memory of the dict (in a worker and in a local runner's shuffle)."""
    return record[f.ID], pickle.dumps(shard_row(record, schema), protocol=pickle.HIGHEST_PROTOCOL)


@dataclass
class _HashingSink:
    """A writable stream that hashes and counts what passes through it."""

    stream: BinaryIO
    size: int = 0
    closed: bool = False

    def __post_init__(self):
        self.sha256 = hashlib.sha256()

    def write(self, data) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.stream.write(data)

    def flush(self) -> None:
        self.stream.flush()

    def tell(self) -> int:
        return self.size

    def close(self) -> None:
        # The caller owns the stream; the Arrow writer closing its sink ends nothing but this view.
        self.closed = True


@dataclass
class _Written:
    rows: int
    sink: _HashingSink
    lengths: dict[str, SideLengths]
    languages: Counter
    language_pairs: Counter


def _write_rows(
    packed_rows: Iterable[tuple[str, bytes]], stream: BinaryIO, schema: pa.Schema, compression: str | None,
    shard_format: str,
) -> _Written:
    # Sorting needs the whole shard: its packed rows, bounded by --shard-size-mb, are all that is held.
    rows = sorted(packed_rows, key=lambda packed: packed[0])
    written = _Written(len(rows), _HashingSink(stream), {}, Counter(), Counter())

    def tables():
        for first in range(0, len(rows), ROWS_PER_RECORD_BATCH):
            batch = [pickle.loads(packed) for _, packed in rows[first : first + ROWS_PER_RECORD_BATCH]]
            lengths_into(written.lengths, batch)
            languages_into(written.languages, written.language_pairs, batch)
            yield pa.Table.from_pylist(batch, schema=schema)

    write_tables(written.sink, schema, tables(), compression, shard_format)
    return written


def write_shard(
    path: str, source: str, packed_rows: Iterable[tuple[str, bytes]], stream: BinaryIO, schema: pa.Schema = PAIR_SCHEMA,
    compression: str | None = None, shard_format: str = "stream",
) -> tuple[Shard, dict[str, SideLengths]]:
    """``packed_rows`` (``packed_row``s, read once) sorted by id into ``stream``, a record batch at a time;
    the shard's manifest entry and lengths."""
    written = _write_rows(packed_rows, stream, schema, compression, shard_format)
    entry = Shard(
        path=path, rows=written.rows, bytes=written.sink.size, sha256=written.sink.sha256.hexdigest(),
        source=source, languages=dict(sorted(written.languages.items())),
        language_pairs=_language_pairs(written.language_pairs),
    )
    return entry, written.lengths


def lengths_into(lengths: dict[str, SideLengths], records: Iterable[dict]) -> None:
    """Add the query and passage lengths of ``records`` to ``lengths``, per query language."""
    for record in records:
        sides = lengths.setdefault(record[f.QUERY_LANG], SideLengths())
        sides.query.add(len(record[f.QUERY]))
        sides.passage.add(len(record[f.PASSAGE]))


def languages_into(languages: Counter, pairs: Counter, records: Iterable[dict]) -> None:
    """Count the rows of ``records`` with each language on either side, and with each (query, passage) pair."""
    for record in records:
        languages.update({record[f.QUERY_LANG], record[f.PASSAGE_LANG]})
        pairs[record[f.QUERY_LANG], record[f.PASSAGE_LANG]] += 1


def _language_pairs(pairs: Counter) -> dict[str, dict[str, int]]:
    """Query language -> passage language -> rows, in sorted order."""
    nested: dict[str, dict[str, int]] = {}
    for (query_lang, passage_lang), n in sorted(pairs.items()):
        nested.setdefault(query_lang, {})[passage_lang] = n
    return nested
