"""``--pipeline hardnegatives``: fine-tuning rows whose ``negatives`` are mined with an encoder.

Exact search, distributed: the corpus (``--corpus``, else the input's own passages, one per
normalised text) is embedded and hashed into blocks; the queries are embedded in groups of about
--batch-size fixed by their row ids, and every group meets every block in a shuffle, each meeting
keeps its queries' best candidates (one scan of the block a group), and a combiner merges them
per query down to the end of the rank window. The rows are first grouped by normalised query, so
that each query leaves out the positives of every row that asks it, not only its own. With
``--relative-margin`` each row's positive is embedded beside its query, for the positive's score. With
``--cross-encoder`` the filters read a cross-encoder's scores of the window's candidates and of the positive
instead (the ranks stay the encoder's), in groups fixed by row id as ``--pipeline teacher`` scores.
"""

import math
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import RunInference

from mining import dedup, hard_negatives, teacher
from pipelines import io, reporting, stages
from pipelines.derived import (
    EmbedGroups, EncoderHandler, FinishedRun, FixedGroups, check_options, ranking_threads, read_records, read_run,
)
from pipelines.options import MiningOptions
from pipelines.teacher import CrossEncoderHandler, cross_encoder_identity
from schemas import pairs as f
from schemas import reasons
from schemas.manifest import Teacher
from schemas.pairs import CONSISTENCY_RANK, FINETUNE_SCHEMA, with_consistency_rank

# Corpus passages per block: a block's embeddings are held by one worker at a time.
CORPUS_BLOCK_ROWS = 16384


@dataclass(frozen=True)
class HardNegativePlan:
    run: FinishedRun
    corpus: FinishedRun | None  # None: the input's own passages
    cross_encoder: Teacher | None  # what scores the window for the false-negative filters; None: the encoder


def plan(options: MiningOptions) -> HardNegativePlan:
    check_options(options)
    return HardNegativePlan(
        read_run(options.input, "--input"),
        read_run(options.corpus, "--corpus") if options.corpus else None,
        cross_encoder_identity("--cross-encoder", options.cross_encoder) if options.cross_encoder else None,
    )


class SearchBlock(beam.DoFn):
    """One corpus block and the query groups that meet it -> (query id, best candidates)."""

    def __init__(self, depth: int):
        self._depth = depth

    def process(self, keyed_group):
        _, group = keyed_group
        entries = sorted(entry for block in group["corpus"] for entry in block)
        if not entries:
            return
        keys = np.array([key for key, _, _ in entries], dtype=np.uint64)
        texts = [text for _, text, _ in entries]
        matrix = np.stack([row for _, _, row in entries])
        for batch in group["queries"]:
            ids = [record_id for record_id, _, _ in batch]
            queries = np.stack([row for _, _, row in batch])
            excluded = [np.array(excluded_keys, dtype=np.uint64) for _, excluded_keys, _ in batch]
            with ranking_threads():
                found = hard_negatives.block_candidates(queries, excluded, matrix, keys, texts, self._depth)
            yield from zip(ids, found, strict=True)


def query_texts(rows, with_positive: bool):
    """The (id, query, positive) rows of one normalised query -> each row's query to embed (and its
    positive, ``with_positive``), keyed by its id and the keys of all their positives, sorted so that
    the keys do not depend on the shuffle.
    """
    rows = list(rows)
    excluded_keys = tuple(sorted({dedup.normalized_passage_key(positive) for _, _, positive in rows}))
    for record_id, query, positive in rows:
        texts = (("query", query), ("passage", positive)) if with_positive else (("query", query),)
        yield (record_id, excluded_keys), texts


class MergeCandidates(beam.CombineFn):
    def __init__(self, depth: int):
        self._depth = depth

    def create_accumulator(self):
        return []

    def add_input(self, accumulator, candidates):
        return hard_negatives.merge_candidates([accumulator, candidates], self._depth)

    def merge_accumulators(self, accumulators):
        return hard_negatives.merge_candidates(list(accumulators), self._depth)

    def extract_output(self, accumulator):
        return accumulator


def window_rows(record_id: str, group: dict, window: tuple[int, int]) -> dict:
    """A joined row as a cross-encoder scores it: its query with its positive and its window's candidates."""
    (record,) = group["record"]
    candidates = next(iter(group["candidates"]), [])
    first, last = window
    return {
        f.ID: record_id, f.QUERY: record[f.QUERY], f.PASSAGE: record[f.PASSAGE],
        f.NEGATIVES: [text for _, _, text in candidates[first - 1 : last]], "group": group,
    }  # fmt: skip


def rescored(result, window: tuple[int, int]):
    """Scored window rows -> (id, joined group) with the window's candidates and the positive scored as the
    cross-encoder scores them; ranks stay the encoder's."""
    for row, (positive, *window_scores) in zip(result.example, result.inference, strict=True):
        if not all(map(math.isfinite, (positive, *window_scores))):
            # A NaN compares false with every threshold: the filters would pass everything, unseen.
            raise teacher.TeacherOutputError(f"the cross-encoder scored {row[f.QUERY]!r} and its window NaN or infinite")
        group = row["group"]
        candidates = list(next(iter(group["candidates"]), []))
        start = window[0] - 1
        for offset, score in enumerate(window_scores):
            _, key, text = candidates[start + offset]
            candidates[start + offset] = (score, key, text)
        yield row[f.ID], {"record": group["record"], "candidates": [candidates], "positive_score": [positive]}


class AttachNegatives(reporting.ReportingDoFn):
    """(id, {record, candidates[, positive_score]}) -> the record as a fine-tuning row with its mined negatives;
    the window's candidates the false-negative filters skip are counted per reason."""

    STAGE = reasons.HARD_NEGATIVES

    def __init__(self, settings: hard_negatives.HardNegativeOptions, run: reporting.RunContext):
        super().__init__(run)
        self._settings = settings
        self._window = hard_negatives.parse_rank_window(settings.rank_window)

    def process(self, keyed_group):
        _, group = keyed_group
        (record,) = group["record"]
        candidates = next(iter(group["candidates"]), [])
        positive = next(iter(group.get("positive_score", ())), None)
        self._report.count_input(record[f.SOURCE])
        settings = self._settings
        negatives, skipped = hard_negatives.choose_negatives(
            candidates, self._window, settings.num_negatives, settings.max_score, settings.relative_margin, positive
        )
        for reason, n in sorted(skipped.items()):
            self._count_skipped(record[f.SOURCE], reason, n)
        # Scores of the negatives this row had would now be read as the new ones'.
        yield {**record, f.NEGATIVES: negatives, f.TASK: record.get(f.TASK) or "", f.TEACHER_SCORES: None}


def recorded_options(options: MiningOptions, plan: HardNegativePlan) -> dict:
    return {
        "derived_by": "hardnegatives",
        "input": options.input,
        "corpus": options.corpus or options.input,
        "model": options.model,
        "rank_window": options.rank_window,
        "num_negatives": options.num_negatives,
        "max_score": options.max_score,
        "relative_margin": options.relative_margin,
        "cross_encoder": options.cross_encoder,
        "cross_encoder_weights_sha256": plan.cross_encoder and plan.cross_encoder.weights_sha256,
        "cross_encoder_revision": plan.cross_encoder and plan.cross_encoder.revision,
        **options.recorded_output_options(),
    }


def build(
    pipeline: beam.Pipeline,
    options: MiningOptions,
    plan: HardNegativePlan,
    destination: io.Destination,
) -> None:
    run, corpus_run = plan.run, plan.corpus
    schema = FINETUNE_SCHEMA
    if CONSISTENCY_RANK in run.manifest.schema_:
        schema = with_consistency_rank(schema)
    settings = options.hard_negative_options()
    window = hard_negatives.parse_rank_window(settings.rank_window)
    depth = window[1]
    corpus_size = (corpus_run or run).manifest.totals.output
    blocks = max(1, math.ceil(corpus_size / CORPUS_BLOCK_ROWS))
    handler = EncoderHandler(options.model, options.device, options.encode_batch_size)
    context = options.run_context()

    records = read_records(pipeline, run, "Input")
    corpus_records = read_records(pipeline, corpus_run, "Corpus") if corpus_run else records
    corpus_blocks = (
        corpus_records
        | "CorpusKey" >> beam.Map(lambda record: (dedup.normalized_passage_key(record[f.PASSAGE]), record[f.PASSAGE]))
        | "OnePerText" >> beam.CombinePerKey(min)
        | "CorpusGroups" >> FixedGroups(corpus_size, options.batch_size, key=lambda key_text: str(key_text[0]))
        | "EmbedCorpus" >> EmbedGroups(handler, lambda key_text: (("passage", key_text[1]),))
        | "CorpusBlock" >> beam.FlatMapTuple(
            lambda entries, embeddings: [
                (key % blocks, (key, text, row[0])) for (key, text), row in zip(entries, embeddings, strict=True)
            ]
        )
        | "CorpusBlocks" >> beam.GroupByKey()
        | "BlockLists" >> beam.MapTuple(lambda block, entries: (block, list(entries)))
    )
    # The positive's score for --relative-margin: the encoder's, unless a cross-encoder scores the window.
    with_positive = settings.relative_margin is not None and plan.cross_encoder is None
    query_groups = (
        records
        | "ByQuery" >> beam.Map(
            lambda record: (
                dedup.normalized_query_key(record[f.QUERY]), (record[f.ID], record[f.QUERY], record[f.PASSAGE])
            )
        )
        | "RowsPerQuery" >> beam.GroupByKey()
        | "QueryTexts" >> beam.FlatMapTuple(lambda _, rows: query_texts(rows, with_positive))
        | "QueryGroups" >> FixedGroups(run.manifest.totals.output, options.batch_size, key=lambda item: item[0][0])
        | "EmbedQueries" >> EmbedGroups(handler, lambda item: item[1])
    )
    query_batches = (
        query_groups
        | "QueryRows" >> beam.MapTuple(
            lambda items, embeddings: [
                (*id_excluded, row[0]) for (id_excluded, _), row in zip(items, embeddings, strict=True)
            ]
        )
        | "EveryBlock" >> beam.FlatMap(lambda batch: [(block, batch) for block in range(blocks)])
    )
    candidates = (
        {"corpus": corpus_blocks, "queries": query_batches}
        | "Meet" >> beam.CoGroupByKey()
        | "Search" >> beam.ParDo(SearchBlock(depth))
        | "Merge" >> beam.CombinePerKey(MergeCandidates(depth))
    )
    joined = {"record": records | "ById" >> beam.Map(lambda record: (record[f.ID], record)), "candidates": candidates}
    if with_positive:
        joined["positive_score"] = query_groups | "PositiveScores" >> beam.FlatMapTuple(
            lambda items, embeddings: [
                (id_excluded[0], hard_negatives.positive_score(*row))
                for (id_excluded, _), row in zip(items, embeddings, strict=True)
            ]
        )
    joined = joined | "Join" >> beam.CoGroupByKey()
    if plan.cross_encoder is not None:
        joined = (
            joined
            | "WindowRows" >> beam.MapTuple(lambda record_id, group: window_rows(record_id, group, window))
            | "WindowGroups" >> FixedGroups(run.manifest.totals.output, options.batch_size)
            | "CrossEncode" >> RunInference(
                CrossEncoderHandler(plan.cross_encoder, options.device, options.encode_batch_size, logits=False)
            )
            | "Rescored" >> beam.FlatMap(rescored, window)
        )
    rows = (
        joined
        | "Attach" >> beam.ParDo(AttachNegatives(settings, context)).with_outputs(reporting.REPORT, main="rows")
    )
    shard_entries = rows.rows | "WriteShards" >> stages.WriteShards.for_options(options, schema, destination)
    (shard_entries, rows[reporting.REPORT]) | "Manifest" >> stages.WriteManifest(
        destination, "finetune", schema, recorded_options(options, plan), options.sampling_alpha, context,
        parent=run.parent,
    )
