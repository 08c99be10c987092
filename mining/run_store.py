"""A run on storage: its manifest.json and the Arrow shards it lists, read, checked and written one way
for mining, split, training, inspect and the pipelines that read a finished run.

The file access is the caller's (``Storage``): pipelines/ pass Beam FileSystems (the ``pipelines.io``
module is one), training passes fsspec; this module imports neither.
"""

import contextlib
import hashlib
import io
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import BinaryIO, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.manifest import MANIFEST_NAME, Manifest, ManifestError, Shard, parse_manifest
from schemas.pairs import schema_description

ROWS_PER_RECORD_BATCH = 1024


class Storage(Protocol):
    def join(self, base: str, *parts: str) -> str: ...

    def exists(self, path: str) -> bool: ...

    def read_bytes(self, path: str) -> bytes: ...

    def open_file(self, path: str) -> AbstractContextManager[BinaryIO]: ...

    def write_atomically(self, path: str, data: bytes) -> None: ...


@dataclass(frozen=True)
class StoredManifest:
    manifest: Manifest
    path: str
    sha256: str  # of the file's bytes: what a derived run records of the run it read


def read_manifest(storage: Storage, directory: str, missing: str) -> StoredManifest:
    """The manifest of the run in ``directory``, validated; ManifestError(``missing``) where it has none."""
    path = storage.join(directory, MANIFEST_NAME)
    if not storage.exists(path):
        raise ManifestError(missing)
    try:
        data = storage.read_bytes(path)
    except OSError as error:
        raise ManifestError(f"{path} cannot be read: {error.strerror or error}") from None
    return StoredManifest(parse_manifest(data, where=path), path, hashlib.sha256(data).hexdigest())


def write_manifest(storage: Storage, directory: str, manifest: Manifest) -> None:
    storage.write_atomically(storage.join(directory, MANIFEST_NAME), manifest.to_json().encode("utf-8"))


# --shard-format: the Arrow IPC stream (the default: written and checked as it streams, one record batch at a
# time, and memory-mapped uncompressed), the IPC file format (the same buffers plus a footer, which polars'
# scan_ipc and duckdb need) or Parquet (smaller, read everywhere, but decoded rather than mapped). Readers tell
# them apart by their first bytes, so every reader reads every format.
SHARD_EXTENSIONS = {"stream": ".arrow", "file": ".arrow", "parquet": ".parquet"}
_IPC_FILE_MAGIC = b"ARROW1"
_PARQUET_MAGIC = b"PAR1"


def write_tables(
    sink: BinaryIO, schema: pa.Schema, tables: Iterable[pa.Table], compression: str | None = None,
    shard_format: str = "stream",
) -> None:
    """``tables`` into ``sink`` as they come, in ``shard_format``, in record batches (row groups) of a fixed
    size; tables of a multiple of that size give the bytes of their concatenation."""
    if shard_format == "parquet":
        # Lists keep Arrow's item name (not Parquet's "element"), so the schema reads back as the manifest's.
        with pq.ParquetWriter(
            sink, schema, compression=compression or "none", use_compliant_nested_type=False
        ) as writer:
            for table in tables:
                writer.write_table(table, row_group_size=ROWS_PER_RECORD_BATCH)
        return
    options = pa.ipc.IpcWriteOptions(compression=compression)
    new_writer = pa.ipc.new_file if shard_format == "file" else pa.ipc.new_stream
    with new_writer(sink, schema, options=options) as writer:
        for table in tables:
            writer.write_table(table, max_chunksize=ROWS_PER_RECORD_BATCH)


def encode_table(table: pa.Table, compression: str | None = None, shard_format: str = "stream") -> bytes:
    """The table in ``shard_format``, in record batches (row groups) of a fixed size."""
    sink = pa.BufferOutputStream()
    write_tables(sink, table.schema, [table], compression, shard_format)
    return sink.getvalue().to_pybytes()


def _format_of(head: bytes) -> str:
    return "file" if head.startswith(_IPC_FILE_MAGIC) else "parquet" if head.startswith(_PARQUET_MAGIC) else "stream"


def read_table(source) -> pa.Table:
    """A shard's table, from a seekable file (a memory map: uncompressed IPC buffers point into it), any format."""
    shard_format = _format_of(source.read(len(_IPC_FILE_MAGIC)))
    source.seek(0)
    if shard_format == "parquet":
        return pq.read_table(source)
    return (pa.ipc.open_file if shard_format == "file" else pa.ipc.open_stream)(source).read_all()


def _batches(stream: io.BufferedReader) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """The schema and record batches of a shard read front to back; a stream batch by batch, the formats with a
    footer (IPC file, Parquet) once read whole."""
    shard_format = _format_of(stream.peek(len(_IPC_FILE_MAGIC)))
    if shard_format == "stream":
        reader = pa.ipc.open_stream(stream)
        return reader.schema, iter(reader)
    table = read_table(io.BytesIO(stream.read()))
    return table.schema, iter(table.to_batches(max_chunksize=ROWS_PER_RECORD_BATCH))


class FileRecord(Protocol):
    """What was recorded of a file when it was written: a manifest's shard, a training state's files.json entry."""

    @property
    def bytes(self) -> int: ...

    @property
    def sha256(self) -> str: ...


@dataclass(frozen=True)
class ProblemWording:
    """How ``file_problems`` says each problem: format strings of the file's ``name``, what was ``found``
    and what was ``recorded``."""

    truncated: str
    size: str
    sha256: str


# As ``verify`` lists a run's shards' problems, one line each, naming the shard by its path in the run.
SHARD_LINES = ProblemWording(
    truncated="{name}: truncated: {found} bytes, manifest says {recorded}",
    size="{name}: {found} bytes, manifest says {recorded}",
    sha256="{name}: checksum mismatch: sha256 {found}, manifest says {recorded}",
)


def file_problems(
    name: str, size: int, sha256: str | None, record: FileRecord, wording: ProblemWording = SHARD_LINES
) -> list[str]:
    """How a file of ``size`` bytes whose sha256 is ``sha256`` (None: not hashed yet) differs from its
    ``record``: a truncated file has that one problem, every other follows from the cut."""
    if size < record.bytes:
        return [wording.truncated.format(name=name, found=size, recorded=record.bytes)]
    problems = []
    if size != record.bytes:
        problems.append(wording.size.format(name=name, found=size, recorded=record.bytes))
    if sha256 is not None and sha256 != record.sha256:
        problems.append(wording.sha256.format(name=name, found=sha256, recorded=record.sha256))
    return problems


class _HashingReader(io.RawIOBase):
    """Counts and hashes the bytes pyarrow reads through it."""

    def __init__(self, stream: BinaryIO):
        self._stream = stream
        self.sha256 = hashlib.sha256()
        self.bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        self.sha256.update(data)
        self.bytes += len(data)
        return len(data)

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def shard_problems(
    shard: Shard, open_file: Callable[[str], AbstractContextManager[BinaryIO]], path: str, present: Collection[str],
    expected_schema: dict[str, str], use_batch: Callable[[pa.RecordBatch], None] = lambda batch: None,
) -> list[str]:
    """Problems with one shard, reading it once from ``path`` (size, sha256, rows and schema together);
    every record batch passes through ``use_batch`` on the way.

    ``present`` are the files under shards/, relative to the directory: known missing
    from the listing, as object stores report a missing object only at its first read.
    """
    if shard.path not in present:
        return [f"{shard.path}: missing"]
    with contextlib.ExitStack() as stack:
        try:
            reader = _HashingReader(stack.enter_context(open_file(path)))
        except OSError as error:
            return [f"{shard.path}: unreadable ({error})"]
        rows = schema = unreadable = None
        try:
            arrow_schema, batches = _batches(io.BufferedReader(reader, 1 << 20))
            schema = schema_description(arrow_schema)
            rows = 0
            for batch in batches:
                use_batch(batch)
                rows += batch.num_rows
        except (pa.ArrowException, OSError, UnicodeDecodeError) as error:
            rows, unreadable = None, f"{shard.path}: not a readable shard ({error})"
        try:
            reader.drain()
        except OSError as error:
            return [f"{shard.path}: unreadable ({error})"]
    size_and_sha256 = file_problems(shard.path, reader.bytes, reader.sha256.hexdigest(), shard)
    if reader.bytes < shard.bytes:
        return size_and_sha256  # every other problem of a cut-short file follows from the cut
    problems = ([unreadable] if unreadable else []) + size_and_sha256
    if rows is not None and rows != shard.rows:
        problems.append(f"{shard.path}: {rows} rows, manifest says {shard.rows}")
    if schema is not None and schema != expected_schema:
        differing = sorted(set(schema.items()) ^ set(expected_schema.items()))
        problems.append(f"{shard.path}: schema differs from the manifest's in {differing}")
    return problems


def verify(manifest: Manifest, storage: Storage, directory: str, present: Collection[str]) -> list[str]:
    """Problems with a run's files, one line each; none when everything the manifest says holds.

    ``present`` are the files under shards/, relative to the directory.
    """
    problems = []
    for shard in manifest.shards:
        path = storage.join(directory, shard.path)
        problems += shard_problems(shard, storage.open_file, path, present, manifest.schema_)
    listed = {shard.path for shard in manifest.shards}
    problems += [f"{path}: present but not in the manifest" for path in sorted(set(present) - listed)]
    for file in manifest.generation.files if manifest.generation else ():
        path = storage.join(directory, file.path)
        if not storage.exists(path):
            problems.append(f"{file.path}: missing")
            continue
        data = storage.read_bytes(path)
        if len(data) != file.bytes or hashlib.sha256(data).hexdigest() != file.sha256:
            problems.append(f"{file.path}: {len(data)} bytes differing from the manifest's {file.bytes}-byte file")
    return problems
