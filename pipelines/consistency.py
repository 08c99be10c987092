"""``--pipeline consistency``: re-read a finished run and keep the pairs whose passage ranks in the
top k for their query among a seeded random pool of the run's own passages.

shards -> pool (the rows with the smallest seeded hash) -> embed the pool once (RunInference, --batch-size
passages an example) -> pairs in groups of about --batch-size fixed by their ids -> embed each group (RunInference)
-> rank each group against the pool as a side input, one scan of the pool a group -> shards + manifest.
"""

import apache_beam as beam
import numpy as np

from mining import consistency, dedup
from mining.records import Drop
from pipelines import io, reporting, stages
from pipelines.derived import (
    EmbedGroups, EncoderHandler, FinishedRun, FixedGroups, Texts, check_options, parent_schema, ranking_threads, read_records,
    read_run,
)
from pipelines.options import MiningOptions
from schemas import pairs as f
from schemas import reasons
from schemas.pairs import with_consistency_rank


def plan(options: MiningOptions) -> FinishedRun:
    check_options(options)
    return read_run(options.input, "--input")


class RankPairs(reporting.ReportingDoFn):
    """A group of records and their (query, passage) embeddings -> records with their rank; the rest dropped as
    ``inconsistent``."""

    STAGE = reasons.CONSISTENCY

    def __init__(self, top_k: float, run: reporting.RunContext):
        super().__init__(run)
        self._top_k = top_k

    def process(self, group_and_embeddings, pool):
        records, embeddings = group_and_embeddings
        pool_keys, pool_matrix = pool
        top_k = consistency.resolve_top_k(self._top_k, len(pool_keys))
        with ranking_threads():
            ranks = consistency.passage_ranks(
                embeddings[:, 0],
                embeddings[:, 1],
                np.array([dedup.exact_passage_key(record[f.PASSAGE]) for record in records], dtype=np.uint64),
                pool_matrix,
                pool_keys,
            )
        for record, rank in zip(records, ranks, strict=True):
            self._report.count_input(record[f.SOURCE])
            self._report.count_rank(record[f.SOURCE], record[f.QUERY_LANG], int(rank))
            item = consistency.judge(record, int(rank), top_k, len(pool_keys))
            if isinstance(item, Drop):
                self._drop_all([item])
            else:
                yield item


def pair_texts(record: dict) -> Texts:
    return ("query", record[f.QUERY]), ("passage", record[f.PASSAGE])


def _stack_pool(embedded: list[tuple[int, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """(passage keys, embedding matrix), in key order; a passage sampled under several ids counts once."""
    embedded = sorted(dict(embedded).items())
    keys = np.array([key for key, _ in embedded], dtype=np.uint64)
    matrix = np.stack([row for _, row in embedded]) if embedded else np.zeros((0, 0), dtype=np.float32)
    return keys, matrix


def recorded_options(options: MiningOptions) -> dict:
    return {
        "derived_by": "consistency",
        "input": options.input,
        "model": options.model,
        "pool_size": options.pool_size,
        "top_k": options.top_k,
        "seed": options.seed,
        **options.recorded_output_options(),
    }


def build(
    pipeline: beam.Pipeline, options: MiningOptions, plan: FinishedRun, destination: io.Destination
) -> None:
    parent_pipeline = plan.manifest.pipeline
    schema = with_consistency_rank(parent_schema(plan))
    settings, run = options.consistency_options(), options.run_context()
    seed = settings.seed
    handler = EncoderHandler(options.model, options.device, options.encode_batch_size)
    passages_per_group = options.batch_size

    records = read_records(pipeline, plan, "Input")
    pool = (
        records
        | "PoolKey" >> beam.Map(lambda record: (consistency.pool_key(seed, record[f.ID]), record[f.PASSAGE]))
        | "Pool" >> beam.combiners.Top.Smallest(settings.pool_size)
        | "PoolGroups" >> beam.FlatMap(
            lambda pool_rows: [
                tuple(pool_rows[start : start + passages_per_group])
                for start in range(0, len(pool_rows), passages_per_group)
            ]
        )
        | "SpreadPool" >> beam.Reshuffle()
        | "EmbedPool" >> EmbedGroups(handler, lambda pool_row: (("passage", pool_row[1]),))
        | "PoolRows" >> beam.FlatMapTuple(
            lambda pool_rows, embeddings: [
                (dedup.exact_passage_key(passage), row[0])
                for (_, passage), row in zip(pool_rows, embeddings, strict=True)
            ]
        )
        | "PoolList" >> beam.combiners.ToList()
        | "PoolMatrix" >> beam.Map(_stack_pool)
    )
    ranked = (
        records
        | "Groups" >> FixedGroups(plan.manifest.totals.output, options.batch_size)
        | "EmbedPairs" >> EmbedGroups(handler, pair_texts)
        | "Rank" >> beam.ParDo(
            RankPairs(settings.top_k, run), pool=beam.pvalue.AsSingleton(pool)
        ).with_outputs(reporting.REPORT, main="kept")
    )
    shard_entries = ranked.kept | "WriteShards" >> stages.WriteShards.for_options(options, schema, destination)
    (shard_entries, ranked[reporting.REPORT]) | "Manifest" >> stages.WriteManifest(
        destination, parent_pipeline, schema, recorded_options(options), options.sampling_alpha, run,
        parent=plan.parent, teacher=plan.manifest.teacher,
    )
