"""The shards of mined output directories: listed by their manifests, checked, fetched and opened.

Shards are checked against the manifest (size, then sha256) before their first
use in a process. Local shards are memory-mapped; remote ones (any fsspec URL,
e.g. ``gs://``) are fetched once into a content-addressed cache and mapped from
there. Only the rows taken are read. (Shards mined with ``--shard-compression
zstd|lz4`` cannot be mapped: they are decompressed into memory when opened, one
table per shard and process.)
"""

import hashlib
import os
import posixpath
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
from filelock import FileLock
from fsspec.implementations.local import LocalFileSystem

from mining import run_store
from schemas import pairs as f
from schemas.manifest import MANIFEST_NAME, Manifest

DEFAULT_CACHE_DIR = Path(os.environ.get("EMBEDMILL_CACHE", Path.home() / ".cache" / "embedmill" / "shards"))
_COLUMNS = [f.ID, f.QUERY, f.PASSAGE, f.NEGATIVES]
_OPTIONAL_COLUMNS = [f.TASK, f.TEACHER_SCORES]  # read where a shard has them; other extra columns are not


class ShardIntegrityError(RuntimeError):
    """A shard's bytes differ from what its manifest recorded."""


@dataclass(frozen=True)
class ShardRef:
    url: str
    rows: int
    bytes: int
    sha256: str


def join(directory: str, *parts: str) -> str:
    """``parts`` under ``directory``, for local paths and URLs alike."""
    return "/".join([directory.rstrip("/"), *parts])


class FsspecStorage:
    """Training's file access, any fsspec URL (e.g. ``gs://``), as ``run_store`` reads and writes a run."""

    join = staticmethod(join)

    @staticmethod
    def exists(url: str) -> bool:
        fs, path = fsspec.core.url_to_fs(url)
        return fs.exists(path)

    @staticmethod
    def read_bytes(url: str) -> bytes:
        fs, path = fsspec.core.url_to_fs(url)
        return fs.cat_file(path)

    @staticmethod
    def open_file(url: str):
        return fsspec.open(url, "rb")

    @staticmethod
    def write_atomically(url: str, data: bytes) -> None:
        """In an object store, one upload; on a local disk, beside the destination under a hidden name, then
        a rename: no reader ever sees a partial file."""
        fs, path = fsspec.core.url_to_fs(url)
        directory, name = posixpath.split(path)
        fs.makedirs(directory, exist_ok=True)
        if not isinstance(fs, LocalFileSystem):
            fs.pipe_file(path, data)
            return
        temporary = posixpath.join(directory, f".{name}.tmp-{uuid.uuid4().hex}")
        with open(temporary, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)


STORAGE = FsspecStorage()


def read_manifest(directory: str) -> Manifest:
    return _read_stored_manifest(directory).manifest


def _read_stored_manifest(directory: str) -> run_store.StoredManifest:
    missing = f"{directory} is not a mined output directory: it has no {MANIFEST_NAME}"
    return run_store.read_manifest(STORAGE, directory, missing)


# Every source's shards, by source name: read from the manifests once, then passed to whatever needs them.
ShardsBySource = dict[str, list[ShardRef]]


def shards_by_source(directories: Sequence[str]) -> ShardsBySource:
    """The non-empty shards of every directory, grouped by source, in the order given."""
    return read_data(directories)[0]


def read_data(directories: Sequence[str]) -> tuple[ShardsBySource, dict[str, str]]:
    """``shards_by_source``, and the sha256 of each directory's manifest (what a model card names its data by)."""
    if not directories:
        raise ValueError("no data directory given")
    sources: ShardsBySource = {}
    digests = {}
    for directory in directories:
        stored = _read_stored_manifest(str(directory))
        digests[str(directory)] = stored.sha256
        for shard in stored.manifest.shards:
            if shard.rows:
                ref = ShardRef(join(str(directory), shard.path), shard.rows, shard.bytes, shard.sha256)
                sources.setdefault(shard.source, []).append(ref)
    if not sources:
        raise ValueError(f"no rows in {', '.join(map(str, directories))}")
    return dict(sorted(sources.items())), digests


_AGAINST_MANIFEST = run_store.ProblemWording(
    truncated="shard {name} is truncated: {found} bytes but its manifest says {recorded}",
    size="shard {name} is {found} bytes but its manifest says {recorded}",
    sha256="shard {name} has sha256 {found} but its manifest says {recorded}:"
    " it changed after the manifest was written or was damaged in transit",
)


def _check(shard: ShardRef, size: int, sha256: str | None = None) -> None:
    problems = run_store.file_problems(shard.url, size, sha256, shard, _AGAINST_MANIFEST)
    if problems:
        raise ShardIntegrityError(problems[0])


def _verified_local(shard: ShardRef, path: str) -> str:
    if not os.path.isfile(path):
        raise ShardIntegrityError(f"shard {shard.url} is missing")
    size = os.path.getsize(path)
    _check(shard, size)  # before hashing: a file of another size is not worth reading
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 22):
            digest.update(chunk)
    _check(shard, size, digest.hexdigest())
    return path


def _fetched(shard: ShardRef, cache_dir: Path) -> str:
    """A verified local copy of a remote shard, downloaded at most once per machine."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / f"{shard.sha256}.arrow"
    with FileLock(f"{target}.lock"):
        # Cached copies are named by their content and renamed into place only
        # after their hash was checked, so the size is all that is left to see.
        if target.exists() and target.stat().st_size == shard.bytes:
            return str(target)
        partial = target.with_suffix(".partial")
        digest = hashlib.sha256()
        try:
            with fsspec.open(shard.url, "rb") as remote, open(partial, "wb") as out:
                while chunk := remote.read(1 << 22):
                    digest.update(chunk)
                    out.write(chunk)
        except FileNotFoundError:
            partial.unlink(missing_ok=True)
            raise ShardIntegrityError(f"shard {shard.url} is missing") from None
        try:
            _check(shard, partial.stat().st_size, digest.hexdigest())
        except ShardIntegrityError:
            partial.unlink()
            raise
        os.replace(partial, target)
    return str(target)


class ShardStore:
    """Opens shards on first use in this process: verified, then memory-mapped."""

    def __init__(self, cache_dir: Path = DEFAULT_CACHE_DIR):
        self.cache_dir = Path(cache_dir)
        self._local_paths: dict[str, str] = {}
        self._tables: dict[str, pa.Table] = {}

    def local_path(self, shard: ShardRef) -> str:
        """A local file with the shard's verified bytes; a remote shard is fetched into the cache."""
        if shard.url not in self._local_paths:
            fs, path = fsspec.core.url_to_fs(shard.url)
            local = isinstance(fs, LocalFileSystem)
            self._local_paths[shard.url] = _verified_local(shard, path) if local else _fetched(shard, self.cache_dir)
        return self._local_paths[shard.url]

    def table(self, shard: ShardRef) -> pa.Table:
        """The columns training reads, from a shard of any format; uncompressed IPC buffers point into the
        mapping, nothing is copied (a Parquet shard is decoded)."""
        if shard.url not in self._tables:
            # The mapping stays open while the table's buffers point into it.
            table = run_store.read_table(pa.memory_map(self.local_path(shard)))
            self._tables[shard.url] = table.select(
                _COLUMNS + [name for name in _OPTIONAL_COLUMNS if name in table.column_names]
            )
        return self._tables[shard.url]

    def __getstate__(self):
        # Open mappings do not travel to other processes; which files were verified does.
        return {**self.__dict__, "_tables": {}}


class Source:
    """The rows of one source kind, across its shards, addressed 0..rows-1."""

    def __init__(self, name: str, shards: list[ShardRef]):
        self.name = name
        self.shards = shards
        self.offsets = np.cumsum([0] + [shard.rows for shard in shards])
        self.rows = int(self.offsets[-1])

    def take(self, store: ShardStore, indices: np.ndarray) -> pa.Table:
        """The rows at ``indices``, in that order."""
        owners = np.searchsorted(self.offsets, indices, side="right") - 1
        pieces, positions = [], []
        for owner in np.unique(owners):
            mine = np.flatnonzero(owners == owner)
            pieces.append(store.table(self.shards[owner]).take(indices[mine] - self.offsets[owner]))
            positions.append(mine)
        # Shards of one source from several outputs may differ in the optional columns: missing ones are null.
        return pa.concat_tables(pieces, promote_options="default").take(np.argsort(np.concatenate(positions)))

    def record_batches(self, store: ShardStore) -> Iterator[pa.RecordBatch]:
        """Every row in storage order, which is shuffled already: rows are sorted by a content hash."""
        for shard in self.shards:
            yield from store.table(shard).to_batches()
