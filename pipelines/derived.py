"""What the pipelines that read a finished run (--input) share: the run's manifest and shards, rows in groups
fixed by their ids, and the encoder as RunInference's model, a group an example.

A model's output for a text may differ in its last bits with the batch it is padded into, and a ranking call
costs a scan of the whole pool or corpus block: so models and rankings see groups of about --batch-size rows
fixed by a hash of their ids, never the batches a runner forms, and the shards do not differ with the worker count.
"""

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference
from threadpoolctl import threadpool_limits

from mining import run_store
from pipelines import io
from pipelines.options import MiningOptions
from schemas import pairs as f
from schemas.encoder_spec import SENTENCE_TRANSFORMERS_PREFIX, EncoderSpec
from schemas.manifest import MANIFEST_NAME, Manifest, Parent, Shard
from schemas.pairs import (
    CONSISTENCY_RANK, SCHEMA_BY_PIPELINE, TEACHER_SCORES, with_consistency_rank, with_teacher_scores,
)

# An example for the encoder: (kind, text) pieces, each embedded with its E5 prefix.
Texts = tuple[tuple[str, str], ...]


# BLAS threads of a ranking call: one per worker process, whose runner starts one process per core. Measured on
# 2 shared cores (passage_ranks, 2,048 queries x 10,000 pool rows, median of 3): 1.19 s with one thread, 2.00 s
# with two; entering the limit costs ~4 ms a call, one call a group.
BLAS_THREADS = 1


def ranking_threads():
    """The context a ranking call runs in: BLAS limited to ``BLAS_THREADS``, whatever the worker's default."""
    return threadpool_limits(limits=BLAS_THREADS, user_api="blas")


def group_count(rows: int, rows_per_group: int) -> int:
    return max(1, math.ceil(rows / rows_per_group))


def group_of(key: str, groups: int) -> int:
    """The group of a row: a hash of its key, so the same rows meet in the same group on every run."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "little") % groups


class FixedGroups(beam.PTransform):
    """Rows -> tuples of about ``rows_per_group`` rows in key order, fixed by their keys (``key``: a row's id)."""

    def __init__(self, rows: int, rows_per_group: int, key: Callable[[object], str] = lambda record: record[f.ID]):
        super().__init__()
        self._groups = group_count(rows, rows_per_group)
        self._key = key

    def expand(self, rows):
        groups, key = self._groups, self._key
        return (
            rows
            | "ByGroup" >> beam.Map(lambda row: (group_of(key(row), groups), row))
            | "Groups" >> beam.GroupByKey()
            | "InKeyOrder" >> beam.MapTuple(lambda _, grouped: tuple(sorted(grouped, key=key)))
        )


def without_weight_bars(model: str) -> None:
    """Before ``model`` (a --model spec) loads in this worker, turn off transformers' bars of loading weights: a
    worker's stderr is a log (or, in a local run, the terminal the run's own progress lines are drawn on), never
    a place for them. A python: callable loads no transformers, and is not made to import it."""
    if EncoderSpec.parse(model).module is None:
        import transformers

        transformers.utils.logging.disable_progress_bar()


def on_this_machine(model: str) -> str:
    """``model`` (a --model spec) with a remote path (``gs://``) replaced by this machine's copy of its files
    (``io.local_copy``): transformers and sentence-transformers load from local directories and the hub only."""
    spec = EncoderSpec.parse(model)
    if spec.path is None:
        return model
    local = io.local_copy(spec.path)  # a local path or hub id as it is
    return SENTENCE_TRANSFORMERS_PREFIX + local if spec.sentence_transformers else local


class EncoderHandler(ModelHandler[Texts, PredictionResult, object]):
    """RunInference's model: ``training.evaluation.load_encoder(spec)``, loaded once per worker, embedding
    ``encode_batch_size`` texts per model call.

    An example is the texts of one group of rows (``EmbedGroups``), a tuple of (kind, text); its inference is one
    normalised row per text, each kind embedded with one ``encode`` call.
    """

    def __init__(self, spec: str, device: str | None, encode_batch_size: int):
        super().__init__()
        self._spec = spec
        self._device = device
        self._encode_batch_size = encode_batch_size

    def load_model(self):
        # Imported here: torch is heavy, and only workers that embed need it.
        from training.evaluation import load_encoder

        without_weight_bars(self._spec)
        return load_encoder(on_this_machine(self._spec), self._device, self._encode_batch_size)

    def run_inference(self, batch, model, inference_args=None):
        results = []
        for example in batch:
            texts: dict[str, list[str]] = {}
            for kind, text in example:
                texts.setdefault(kind, []).append(text)
            embedded = {kind: iter(model.encode(kind_texts, kind)) for kind, kind_texts in texts.items()}
            results.append(PredictionResult(example, np.stack([next(embedded[kind]) for kind, _ in example])))
        return results

    def share_model_across_processes(self) -> bool:
        # One copy per GPU is what memory allows; on CPU each process keeps its own.
        return self._device == "cuda"

    def batch_elements_kwargs(self):
        # A group is already the batch: merging groups would make what a call sees depend on the runner.
        return {"min_batch_size": 1, "max_batch_size": 1}


class EmbedGroups(beam.PTransform):
    """Groups of rows (tuples) -> (group, embeddings): the ``texts_of`` each row, the same number for every row,
    embedded by the encoder, as an array of rows x texts x width."""

    def __init__(self, handler: EncoderHandler, texts_of: Callable[[object], Texts]):
        super().__init__()
        self._handler = handler
        self._texts_of = texts_of

    def expand(self, groups):
        texts_of = self._texts_of
        return (
            groups
            | "Texts" >> beam.Map(lambda group: (group, tuple(text for row in group for text in texts_of(row))))
            | "Embed" >> RunInference(KeyedModelHandler(self._handler))
            | "PerRow" >> beam.MapTuple(
                lambda group, result: (group, result.inference.reshape(len(group), -1, result.inference.shape[-1]))
            )
        )


@dataclass(frozen=True)
class FinishedRun:
    parent: Parent
    manifest: Manifest
    option: str

    @property
    def shards(self) -> list[tuple[str, Shard]]:
        """(path, manifest entry) of every shard."""
        return [(io.join(self.parent.path, shard.path), shard) for shard in self.manifest.shards]


class DamagedShardError(ValueError):
    """A shard of a finished run differs from what its manifest recorded."""


def read_run(directory: str, option: str) -> FinishedRun:
    """A finished run's manifest, and each of its shards there with its recorded size, checked before
    any work starts. Their contents are checked as they are read (``ReadShard``): the launcher does
    not read a billion rows first."""
    missing = f"{option} {directory} holds no {MANIFEST_NAME}: not a finished run"
    stored = run_store.read_manifest(io, directory, missing)
    run = FinishedRun(Parent(path=directory, sha256=stored.sha256), stored.manifest, option)
    matches = FileSystems.match([shard_path for shard_path, _ in run.shards])
    problems = [
        f"{shard.path}: {sizes[0]} bytes, manifest says {shard.bytes}" if sizes else f"{shard.path}: missing"
        for (_, shard), match in zip(run.shards, matches, strict=True)
        if (sizes := [metadata.size_in_bytes for metadata in match.metadata_list]) != [shard.bytes]
    ]
    if problems:
        more = f" (and {len(problems) - 1} more damaged shards)" if len(problems) > 1 else ""
        raise DamagedShardError(f"{option} {directory}: {problems[0]}{more}")
    return run


def parent_schema(run: FinishedRun) -> pa.Schema:
    """The Arrow schema of a finished run's shards: its pipeline's, with the columns derived runs add where it has them."""
    schema = SCHEMA_BY_PIPELINE[run.manifest.pipeline]
    if CONSISTENCY_RANK in run.manifest.schema_:
        schema = with_consistency_rank(schema)
    if TEACHER_SCORES in run.manifest.schema_:
        schema = with_teacher_scores(schema)
    return schema


def check_options(options: MiningOptions) -> None:
    """ValueError naming what a pipeline over a finished run is missing."""
    if options.source:
        raise ValueError(f"--pipeline {options.pipeline} reads --input, not --source")
    if not options.input or not options.model:
        raise ValueError(f"--pipeline {options.pipeline} needs --input DIR (a finished run) and --model SPEC")


class ReadShard(beam.DoFn):
    """A shard (path, manifest entry) -> its rows as records, once its bytes, rows and schema are
    what the manifest recorded (``run_store.shard_problems`` on the bytes read)."""

    def __init__(self, run: FinishedRun):
        self._where = f"{run.option} {run.parent.path}"
        self._schema = run.manifest.schema_

    def process(self, path_and_shard: tuple[str, Shard]):
        path, shard = path_and_shard
        data = io.read_bytes(path)
        batches = []
        problems = run_store.shard_problems(
            shard, lambda _: BytesIO(data), path, [shard.path], self._schema, use_batch=batches.append
        )
        if problems:
            raise DamagedShardError(f"{self._where}: {'; '.join(problems)}")
        for batch in batches:
            yield from batch.to_pylist()


def read_records(pipeline: beam.Pipeline, run: FinishedRun, label: str):
    return (
        pipeline
        | f"{label}/Shards" >> beam.Create(run.shards)
        | f"{label}/Spread" >> beam.Reshuffle()
        | f"{label}/Read" >> beam.ParDo(ReadShard(run))
    )
