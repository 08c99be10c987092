"""``--pipeline hardnegatives``: fine-tuning rows whose ``negatives`` are mined with an encoder.

Exact search, distributed: the corpus (``--corpus``, else the input's own passages, one per
normalised text) is embedded and hashed into blocks; the queries are embedded in groups of about
--batch-size fixed by their row ids, and every group meets every block in a shuffle, each meeting
keeps its queries' best candidates (one scan of the block a group), and a combiner merges them
per query down to the end of the rank window. Only keys and scores cross those shuffles, as compact arrays (a
query's candidates one ``hard_negatives.CANDIDATES`` array, passage keys as int64 with their uint64 bits, which
Beam's coder encodes without pickle); the texts of the candidates are looked up once, by corpus block, at the
end. The rows are first grouped by normalised query, so
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
    EmbedGroups, EncoderHandler, FinishedRun, FixedGroups, check_options, group_count, group_of, ranking_threads,
    read_records, read_run,
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


def shuffled_key(key: int) -> int:
    """A uint64 key as the int64 of the same bits: Beam encodes it as a varint, a larger int by pickle."""
    return key - (1 << 64) if key >= 1 << 63 else key


def unshuffled_key(shuffled: int) -> int:
    return shuffled % (1 << 64)


def key_array(keys: bytes) -> np.ndarray:
    """Passage keys as they cross a shuffle (uint64 bytes: Beam pickles every numpy array) -> an array."""
    return np.frombuffer(keys, dtype=np.uint64)


def block_parts(entries, embeddings, blocks: int):
    """An embedded group of corpus (shuffled key, text) -> (block, (key bytes, texts, embeddings)) per block."""
    keys = np.array([unshuffled_key(key) for key, _ in entries], dtype=np.uint64)
    in_block = keys % np.uint64(blocks)
    for block in np.unique(in_block).tolist():
        chosen = np.flatnonzero(in_block == block)
        yield block, (keys[chosen].tobytes(), tuple(entries[i][1] for i in chosen), embeddings[chosen, 0])


class SearchBlock(beam.DoFn):
    """One corpus block and the query groups that meet it -> (query group, {query id: its best candidates as
    ``CANDIDATES`` bytes}): one element a group, not one a query, for Beam's cost is per element."""

    def __init__(self, depth: int):
        self._depth = depth

    def process(self, keyed_group):
        _, group = keyed_group
        parts = list(group["corpus"])
        if not parts:
            return
        keys = key_array(b"".join(part_keys for part_keys, _ in parts))
        order = np.argsort(keys, kind="stable")
        keys, matrix = keys[order], np.concatenate([matrix for _, matrix in parts])[order]
        for query_group, ids, excluded_keys, queries in group["queries"]:
            excluded = [key_array(keys_bytes) for keys_bytes in excluded_keys]
            with ranking_threads():
                found = hard_negatives.block_candidate_arrays(queries, excluded, matrix, keys, self._depth)
            yield query_group, {record_id: candidates.tobytes() for record_id, candidates in zip(ids, found, strict=True)}


def query_texts(rows, with_positive: bool):
    """The (id, query, positive) rows of one normalised query -> each row's query to embed (and its
    positive, ``with_positive``), keyed by its id and the keys of all their positives (uint64 bytes), sorted so
    that the keys do not depend on the shuffle.
    """
    rows = list(rows)
    excluded_keys = np.array(
        sorted({dedup.normalized_passage_key(positive) for _, _, positive in rows}), dtype=np.uint64
    ).tobytes()
    for record_id, query, positive in rows:
        texts = (("query", query), ("passage", positive)) if with_positive else (("query", query),)
        yield (record_id, excluded_keys), texts


def candidate_array(candidates: bytes) -> np.ndarray:
    return np.frombuffer(candidates, dtype=hard_negatives.CANDIDATES)


class MergeCandidates(beam.CombineFn):
    """{query id: ``CANDIDATES`` bytes} of one query group per block -> each query's ``depth`` best, as bytes."""

    def __init__(self, depth: int):
        self._depth = depth

    def create_accumulator(self):
        return {}

    def add_input(self, accumulator, found):
        return self.merge_accumulators([accumulator, found])

    def merge_accumulators(self, accumulators):
        merged = {}
        for found in accumulators:
            for record_id, candidates in found.items():
                if record_id in merged:
                    arrays = [candidate_array(merged[record_id]), candidate_array(candidates)]
                    candidates = hard_negatives.merge_candidate_arrays(arrays, self._depth).tobytes()
                merged[record_id] = candidates
        return merged

    def extract_output(self, accumulator):
        return accumulator


def text_requests(query_group: int, found: dict, blocks: int):
    """A query group's merged candidates -> (block, (group, the key bytes of its candidates there))."""
    keys = np.unique(np.concatenate([candidate_array(candidates)["key"] for candidates in found.values()]))
    in_block = keys % np.uint64(blocks)
    for block in np.unique(in_block).tolist():
        yield block, (query_group, keys[in_block == block].tobytes())


def look_up_texts(block: int, group: dict):
    """One corpus block's texts and the requests for them -> (query group, (key bytes, their texts)) per request."""
    texts = {
        key: text for keys, block_texts in group["corpus"] for key, text in zip(key_array(keys).tolist(), block_texts)
    }
    for query_group, keys in group["requests"]:
        yield query_group, (keys, tuple(texts[key] for key in key_array(keys).tolist()))


def joined_rows(group: dict):
    """A joined query group -> (id, (record, its merged candidates best first each with its text, its positive's
    score or None)) for each of its records."""
    found = next(iter(group["candidates"]), {})
    texts = {
        key: text for keys, part_texts in group["texts"] for key, text in zip(key_array(keys).tolist(), part_texts)
    }
    positives = {record_id: score for scores in group.get("positive_scores", ()) for record_id, score in scores}
    for record in group["record"]:
        record_id = record[f.ID]
        candidates = candidate_array(found.get(record_id, b""))
        yield record_id, (record, hard_negatives.with_texts(candidates, texts), positives.get(record_id))


def window_rows(record_id: str, joined: tuple, window: tuple[int, int]) -> dict:
    """A joined row as a cross-encoder scores it: its query with its positive and its window's candidates."""
    record, candidates, _ = joined
    first, last = window
    return {
        f.ID: record_id, f.QUERY: record[f.QUERY], f.PASSAGE: record[f.PASSAGE],
        f.NEGATIVES: [text for _, _, text in candidates[first - 1 : last]], "joined": joined,
    }  # fmt: skip


def rescored(result, window: tuple[int, int]):
    """Scored window rows -> (id, joined row) with the window's candidates and the positive scored as the
    cross-encoder scores them; ranks stay the encoder's."""
    for row, (positive, *window_scores) in zip(result.example, result.inference, strict=True):
        if not all(map(math.isfinite, (positive, *window_scores))):
            # A NaN compares false with every threshold: the filters would pass everything, unseen.
            raise teacher.TeacherOutputError(f"the cross-encoder scored {row[f.QUERY]!r} and its window NaN or infinite")
        record, candidates, _ = row["joined"]
        candidates = list(candidates)
        start = window[0] - 1
        for offset, score in enumerate(window_scores):
            _, key, text = candidates[start + offset]
            candidates[start + offset] = (score, key, text)
        yield row[f.ID], (record, candidates, positive)


class AttachNegatives(reporting.ReportingDoFn):
    """(id, (record, candidates, positive's score or None)) -> the record as a fine-tuning row with its mined
    negatives; the window's candidates the false-negative filters skip are counted per reason."""

    STAGE = reasons.HARD_NEGATIVES

    def __init__(self, settings: hard_negatives.HardNegativeOptions, run: reporting.RunContext):
        super().__init__(run)
        self._settings = settings
        self._window = hard_negatives.parse_rank_window(settings.rank_window)

    def process(self, keyed_row):
        _, (record, candidates, positive) = keyed_row
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
        # The record a teacher run's manifest keeps of its cross-encoder (``Teacher``): spec, name, weights' hash.
        "cross_encoder": plan.cross_encoder and plan.cross_encoder.model_dump(),
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
    corpus_parts = (
        corpus_records
        | "CorpusKey" >> beam.Map(
            lambda record: (shuffled_key(dedup.normalized_passage_key(record[f.PASSAGE])), record[f.PASSAGE])
        )
        | "OnePerText" >> beam.CombinePerKey(min)
        | "CorpusGroups" >> FixedGroups(
            corpus_size, options.batch_size, key=lambda key_text: str(unshuffled_key(key_text[0]))
        )
        | "EmbedCorpus" >> EmbedGroups(handler, lambda key_text: (("passage", key_text[1]),))
        | "CorpusBlockParts" >> beam.FlatMapTuple(lambda entries, embeddings: block_parts(entries, embeddings, blocks))
    )
    corpus_blocks = corpus_parts | "BlockEmbeddings" >> beam.MapTuple(
        lambda block, part: (block, (part[0], part[2]))
    )
    # The positive's score for --relative-margin: the encoder's, unless a cross-encoder scores the window.
    with_positive = settings.relative_margin is not None and plan.cross_encoder is None
    query_groups = (
        records
        | "ByQuery" >> beam.Map(
            lambda record: (
                shuffled_key(dedup.normalized_query_key(record[f.QUERY])), (record[f.ID], record[f.QUERY], record[f.PASSAGE])
            )
        )
        | "RowsPerQuery" >> beam.GroupByKey()
        | "QueryTexts" >> beam.FlatMapTuple(lambda _, rows: query_texts(rows, with_positive))
        | "QueryGroups" >> FixedGroups(run.manifest.totals.output, options.batch_size, key=lambda item: item[0][0])
        | "EmbedQueries" >> EmbedGroups(handler, lambda item: item[1])
    )
    # Records meet their candidates in the groups their queries were embedded and ranked in.
    groups = group_count(run.manifest.totals.output, options.batch_size)
    query_batches = (
        query_groups
        | "QueryBatch" >> beam.MapTuple(
            lambda items, embeddings: (
                group_of(items[0][0][0], groups),
                tuple(record_id for (record_id, _), _ in items),
                tuple(excluded for (_, excluded), _ in items),
                np.ascontiguousarray(embeddings[:, 0]),
            )
        )
        | "EveryBlock" >> beam.FlatMap(lambda batch: [(block, batch) for block in range(blocks)])
    )
    candidates = (
        {"corpus": corpus_blocks, "queries": query_batches}
        | "Meet" >> beam.CoGroupByKey()
        | "Search" >> beam.ParDo(SearchBlock(depth))
        | "Merge" >> beam.CombinePerKey(MergeCandidates(depth))
    )
    texts = (
        {
            "corpus": corpus_parts | "BlockTexts" >> beam.MapTuple(lambda block, part: (block, (part[0], part[1]))),
            "requests": candidates | "TextRequests" >> beam.FlatMapTuple(lambda record_id, found: text_requests(record_id, found, blocks)),
        }
        | "ByBlock" >> beam.CoGroupByKey()
        | "LookUpTexts" >> beam.FlatMapTuple(look_up_texts)
    )
    joined = {
        "record": records | "ByGroup" >> beam.Map(lambda record: (group_of(record[f.ID], groups), record)),
        "candidates": candidates,
        "texts": texts,
    }
    if with_positive:
        joined["positive_scores"] = query_groups | "PositiveScores" >> beam.MapTuple(
            lambda items, embeddings: (
                group_of(items[0][0][0], groups),
                tuple(
                    (id_excluded[0], hard_negatives.positive_score(*row))
                    for (id_excluded, _), row in zip(items, embeddings, strict=True)
                ),
            )
        )
    joined = joined | "Join" >> beam.CoGroupByKey() | "JoinedRows" >> beam.FlatMapTuple(lambda _, group: joined_rows(group))
    if plan.cross_encoder is not None:
        joined = (
            joined
            | "WindowRows" >> beam.MapTuple(lambda record_id, row: window_rows(record_id, row, window))
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
