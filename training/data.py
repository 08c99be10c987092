"""Streaming tokenised pair batches out of mined output directories.

Guarantees, all independent of the number of loader workers and ranks:

- Every global batch comes from one source. Its source is drawn with
  probability ``n_i**alpha / sum(n_j**alpha)`` from a generator seeded by the
  run's seed and the step alone, so every rank draws the same.
- Each source is read in passes. A pass visits every row of the source exactly
  once in a seeded shuffled order, split into ``ceil(n / batch_size)`` batches
  of near-equal size; batches never straddle two passes, so no row meets itself
  in a batch. A global batch is cut into contiguous near-equal slices, one per
  rank; each loader worker builds whole local batches, round-robin by step,
  which is the order a ``DataLoader`` hands them out in.
- The rows of step ``k`` are a pure function of the seed, the batch size and
  the sources' sizes, so resuming at step ``k`` (``state_dict`` /
  ``load_state_dict``) reproduces an uninterrupted run's batches exactly.
- Shards are checked against the manifest (size, then sha256) before their
  first use in a process. Local shards are memory-mapped; remote ones (any
  fsspec URL, e.g. ``gs://``) are fetched once into a content-addressed cache
  and mapped from there. Only the rows of the batches being built are read.
  (Shards mined with ``--shard-compression zstd|lz4`` cannot be mapped: they
  are decompressed into memory when opened, one table per shard and process.)
"""

import hashlib
import os
import posixpath
import uuid
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import torch
from filelock import FileLock
from fsspec.implementations.local import LocalFileSystem
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mining import run_store
from schemas import pairs as f
from schemas.manifest import MANIFEST_NAME, Manifest
from training.permutation import Permutation
from training.prompts import E5, InstructPrompts, Kind, Prompts

DEFAULT_CACHE_DIR = Path(os.environ.get("EMBEDMILL_CACHE", Path.home() / ".cache" / "embedmill" / "shards"))
_COLUMNS = [f.ID, f.QUERY, f.PASSAGE, f.NEGATIVES]
_OPTIONAL_COLUMNS = [f.TASK, f.TEACHER_SCORES]  # read where a shard has them; other extra columns are not
# Seeds of the independent random streams derived from the run's seed.
_SOURCE_DRAW_STREAM = 0
_SHUFFLE_STREAM = 1


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
    missing = f"{directory} is not a mined output directory: it has no {MANIFEST_NAME}"
    return run_store.read_manifest(STORAGE, directory, missing).manifest


def shards_by_source(directories: Sequence[str]) -> dict[str, list[ShardRef]]:
    """The non-empty shards of every directory, grouped by source, in the order given."""
    if not directories:
        raise ValueError("no data directory given")
    sources: dict[str, list[ShardRef]] = {}
    for directory in directories:
        for shard in read_manifest(str(directory)).shards:
            if shard.rows:
                ref = ShardRef(join(str(directory), shard.path), shard.rows, shard.bytes, shard.sha256)
                sources.setdefault(shard.source, []).append(ref)
    if not sources:
        raise ValueError(f"no rows in {', '.join(map(str, directories))}")
    return dict(sorted(sources.items()))


def _check(shard: ShardRef, size: int, sha256: str | None) -> None:
    if size < shard.bytes:
        raise ShardIntegrityError(f"shard {shard.url} is truncated: {size} bytes but its manifest says {shard.bytes}")
    if size != shard.bytes:
        raise ShardIntegrityError(f"shard {shard.url} is {size} bytes but its manifest says {shard.bytes}")
    if sha256 is not None and sha256 != shard.sha256:
        raise ShardIntegrityError(
            f"shard {shard.url} has sha256 {sha256} but its manifest says {shard.sha256}:"
            " it changed after the manifest was written or was damaged in transit"
        )


def _verified_local(shard: ShardRef, path: str) -> str:
    if not os.path.isfile(path):
        raise ShardIntegrityError(f"shard {shard.url} is missing")
    _check(shard, os.path.getsize(path), None)
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 22):
            digest.update(chunk)
    _check(shard, shard.bytes, digest.hexdigest())
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
        """The columns training reads; uncompressed IPC buffers point into the mapping, nothing is copied."""
        if shard.url not in self._tables:
            with pa.ipc.open_stream(pa.memory_map(self.local_path(shard))) as reader:
                table = reader.read_all()
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


@dataclass
class PairBatch:
    """One rank's share of a global batch, tokenised."""

    step: int
    source: str
    global_size: int  # pairs in the global batch, all ranks together
    ids: list[str]
    queries: dict[str, torch.Tensor]
    passages: dict[str, torch.Tensor]
    negatives: dict[str, torch.Tensor] | None  # flattened over rows; None when no row has any
    negative_counts: torch.Tensor | None = None  # per row, how many of ``negatives`` are its own, in row order
    # (rows, 1 + max count): teacher logits of each row's [passage, *negatives]; NaN where a row has none. None: no row has.
    teacher_scores: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.ids)


class PairStream(IterableDataset):
    """Endless homogeneous batches of tokenised pairs; see the module's docstring."""

    def __init__(
        self,
        directories: Sequence[str],
        tokenizer,
        *,
        batch_size: int,
        seed: int = 0,
        alpha: float = 0.5,
        rank: int = 0,
        world_size: int = 1,
        max_query_length: int = 128,
        max_passage_length: int = 256,
        max_negatives: int = 1,
        prompts: dict[str, Prompts | InstructPrompts] | None = None,
        default_prompts: Prompts | InstructPrompts = E5,
        cache_dir: Path = DEFAULT_CACHE_DIR,
        start_step: int = 0,
    ):
        self.sources = [Source(name, shards) for name, shards in shards_by_source(directories).items()]
        self.schedule = Schedule(
            [source.name for source in self.sources],
            [source.rows for source in self.sources],
            batch_size,
            seed,
            alpha,
        )
        for index, source in enumerate(self.sources):
            if self.schedule.smallest_batch(index) < world_size:
                raise ValueError(
                    f"source {source.name}: {source.rows} rows in batches of up to {batch_size}"
                    f" cannot give each of {world_size} ranks a row"
                )
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.alpha = alpha
        self.rank, self.world_size = rank, world_size
        self.max_lengths = {"query": max_query_length, "passage": max_passage_length}
        self.max_negatives = max_negatives
        self.prompts = {source.name: (prompts or {}).get(source.name, default_prompts) for source in self.sources}
        self.store = ShardStore(cache_dir)
        self.start_step = start_step

    def state_dict(self) -> dict:
        return {
            "step": self.start_step,
            "seed": self.schedule.seed,
            "batch_size": self.batch_size,
            "alpha": self.alpha,
            "sources": {source.name: source.rows for source in self.sources},
        }

    def load_state_dict(self, state: dict) -> None:
        mine = self.state_dict()
        changed = [key for key in mine if key != "step" and state.get(key) != mine[key]]
        if changed:
            raise ValueError(
                "the stored data position belongs to another stream: "
                + "; ".join(f"{key} was {state.get(key)!r}, is {mine[key]!r}" for key in changed)
            )
        self.start_step = state["step"]

    def __iter__(self) -> Iterator[PairBatch]:
        worker = get_worker_info()
        workers, worker_id = (worker.num_workers, worker.id) if worker else (1, 0)
        start = self.start_step
        for planned in self.schedule.batches(start):
            if (planned.step - start) % workers == worker_id:
                yield self.materialise(planned)

    def materialise(self, planned: PlannedBatch) -> PairBatch:
        source = self.sources[planned.source]
        first, stop = planned.rank_slice(self.rank, self.world_size)
        shuffle = self.schedule.shuffle(planned.source, planned.pass_index)
        rows = source.take(self.store, shuffle(np.arange(first, stop)))
        prompts = self.prompts[source.name]
        groups = [row[: self.max_negatives] for row in rows.column(f.NEGATIVES).to_pylist()]
        negatives = [text for group in groups for text in group]
        counts = [len(group) for group in groups]
        # A row's task (its instruction) reaches the query's prompt; prompts without instructions ignore it.
        tasks = rows.column(f.TASK).to_pylist() if f.TASK in rows.column_names else None
        return PairBatch(
            step=planned.step,
            source=source.name,
            global_size=planned.stop - planned.start,
            ids=rows.column(f.ID).to_pylist(),
            queries=self.tokenize(rows.column(f.QUERY).to_pylist(), "query", prompts, tasks),
            passages=self.tokenize(rows.column(f.PASSAGE).to_pylist(), "passage", prompts),
            negatives=self.tokenize(negatives, "passage", prompts) if negatives else None,
            negative_counts=torch.tensor(counts, dtype=torch.long),
            teacher_scores=_teacher_scores(rows, counts),
        )

    def tokenize(
        self, texts: list[str], kind: Kind, prompts: Prompts | InstructPrompts, tasks: list[str | None] | None = None
    ) -> dict[str, torch.Tensor]:
        tasks = tasks or [None] * len(texts)
        encoded = self.tokenizer(
            [prompts.format(text, kind, task) for text, task in zip(texts, tasks, strict=True)],
            padding=True,
            truncation=True,
            max_length=self.max_lengths[kind],
            return_tensors="pt",
        )
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def _teacher_scores(rows: pa.Table, counts: list[int]) -> torch.Tensor | None:
    if f.TEACHER_SCORES not in rows.column_names:
        return None
    scores = torch.full((len(counts), 1 + max(counts, default=0)), float("nan"))
    for index, (row, count) in enumerate(zip(rows.column(f.TEACHER_SCORES).to_pylist(), counts, strict=True)):
        if row is not None and len(row) >= 1 + count:  # a row scored short of its group is not distilled
            scores[index, : 1 + count] = torch.tensor(row[: 1 + count], dtype=torch.float32)
    return None if scores[:, 0].isnan().all() else scores


class PairLoader:
    """A ``PairStream`` read through ``DataLoader`` workers; remembers the batches consumed."""

    def __init__(self, stream: PairStream, num_workers: int = 0, prefetch_factor: int = 2):
        self.stream = stream
        self.num_workers = num_workers
        self.prefetch_factor = prefetch_factor

    def __iter__(self) -> Iterator[PairBatch]:
        if self.num_workers:
            # The workers are forked, possibly after the tokenizer's thread pool
            # was used here; the loader's parallelism is the workers.
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        loader = DataLoader(
            self.stream,
            batch_size=None,
            num_workers=self.num_workers,
            prefetch_factor=self.prefetch_factor if self.num_workers else None,
            # Its own generator: starting workers would otherwise draw from the
            # global one, and a resumed run would see other dropout masks.
            generator=torch.Generator(),
        )
        for batch in loader:
            self.stream.start_step = batch.step + 1
            yield batch

    def state_dict(self) -> dict:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state)
