"""Streaming tokenised pair batches out of mined output directories, in the order ``training.schedule`` plans.

Each loader worker builds whole local batches, round-robin by step, which is
the order a ``DataLoader`` hands them out in, so the batches are the same with
any number of workers. Resuming at step ``k`` (``state_dict`` /
``load_state_dict``) reproduces an uninterrupted run's batches exactly.
"""

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mining.dedup import normalized_passage_key
from schemas import pairs as f
from schemas.manifest import DEFAULT_SAMPLING_ALPHA
from training.prompts import E5, InstructPrompts, Kind, Prompts
from training.schedule import PlannedBatch, Schedule
from training.shard_store import DEFAULT_CACHE_DIR, ShardsBySource, ShardStore, Source


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
    # ``passage_keys`` per row and ``negative_keys`` per negative (int64, see ``passage_keys``): the loss
    # masks a passage or negative equal to a row's passage out of that row's negatives. None: nothing masked.
    passage_keys: torch.Tensor | None = None
    negative_keys: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.ids)


class PairStream(IterableDataset):
    """Endless homogeneous batches of tokenised pairs; see this module's and ``training.schedule``'s docstrings."""

    def __init__(
        self,
        shards: ShardsBySource,
        tokenizer,
        *,
        batch_size: int,
        seed: int = 0,
        alpha: float = DEFAULT_SAMPLING_ALPHA,
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
        self.sources = [Source(name, source_shards) for name, source_shards in shards.items()]
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
            passage_keys=passage_keys(rows.column(f.PASSAGE).to_pylist()),
            negative_keys=passage_keys(negatives),
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


def passage_keys(texts: list[str]) -> torch.Tensor:
    """``dedup.normalized_passage_key`` of each text, its 64 bits read as int64: equal for passages
    equal up to case, punctuation and spacing, so the loss compares keys, not texts."""
    keys = np.array([normalized_passage_key(text) for text in texts], dtype=np.uint64)
    return torch.from_numpy(keys.view(np.int64))


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
