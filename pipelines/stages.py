"""Thin Beam wrappers around the stages in ``mining``.

Records travel in lists of up to ``batch_size`` until a shuffle needs them one
by one. Each stage reports its drops where it decides them: a Beam counter per
reason for the job's UI, and a FunnelReport per bundle for the manifest.
"""

import json
from collections import Counter

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows

from mining import dedup, instruct, langid, run_store, shards
from mining.clean import clean_batch
from mining.dataset_card import dataset_card
from mining.records import DeadLetter, Drop
from mining.report import FunnelReport, build_manifest
from mining.sources import get_reader
from mining.sources.base import JoinPart
from pipelines import io
from pipelines.reporting import REPORT, ReportingDoFn, RunContext
from schemas import pairs as f
from schemas import reasons
from schemas.manifest import DATASET_CARD, DEAD_LETTER_DIR, REJECTED_DIR

JOIN = "join"
_RECORD = "record"
_VERDICT = "verdict"


class _ReaderItems(ReportingDoFn):
    """What reading and joining share: each item a reader yields goes to its output, pairs in batches."""

    STAGE = reasons.READ

    def start_bundle(self):
        super().start_bundle()
        self._batch = []

    def _route(self, kind: str, items, source_of):
        """Outputs for ``items`` of a reader of ``kind``: parts of a later join, dead letters and full batches;
        each candidate counted under ``source_of(item)``, a record also under its declared language."""
        for item in items:
            if isinstance(item, JoinPart):
                # Not a candidate yet: the join that decides it counts it.
                yield beam.pvalue.TaggedOutput(JOIN, ((kind, item.key), item))
                continue
            self._report.count_input(source_of(item))
            if isinstance(item, DeadLetter):
                yield self._dead_letter(item)
            elif isinstance(item, Drop):
                self._report.count_language_input(item.record)
                self._drop_all([item])
            else:
                self._report.count_language_input(item)
                self._batch.append(item)
                if len(self._batch) == self._run.batch_size:
                    yield self._batch
                    self._batch = []


class ReadBatches(_ReaderItems):
    """ReadTask -> lists of pair records; dead letters on their own output."""

    def __init__(self, limits, run: RunContext):
        super().__init__(run)
        self._limits = limits

    def process(self, task):
        items = get_reader(task.kind).read_all(task, io.open_file, self._limits)
        # Under the record's own source: a reader may split its kind (one source per template).
        yield from self._route(task.kind, items, _source_of)
        if self._batch:
            yield self._batch
            self._batch = []


def _source_of(item: dict | Drop | DeadLetter) -> str:
    if isinstance(item, DeadLetter):
        return item.source
    return (item.record if isinstance(item, Drop) else item)[f.SOURCE]


class JoinGroups(_ReaderItems):
    """One join round: groups of JoinParts -> batches of pairs; parts for the next round on ``join``,
    a group whose join fails as a dead letter."""

    def __init__(self, round_index: int, run: RunContext):
        super().__init__(run)
        self._round = round_index

    def process(self, keyed_group):
        (kind, key), parts = keyed_group
        yield from self._route(kind, get_reader(kind).join_items(self._round, key, parts), lambda _: kind)

    def finish_bundle(self):
        if self._batch:
            yield GlobalWindows.windowed_value(self._batch)
        yield from super().finish_bundle()


class FormatInstructionRows(ReportingDoFn):
    """Instruction rows at write time: the formatted query, and the distinct instructions counted."""

    STAGE = reasons.WRITE

    def process(self, record):
        self._report.add_instruction(record[f.SOURCE], record[f.INSTRUCTION])
        yield instruct.format_row(record)


class CleanBatches(ReportingDoFn):
    STAGE = reasons.CLEAN

    def __init__(self, options, run: RunContext):
        super().__init__(run)
        self._options = options

    def process(self, batch):
        kept, drops = clean_batch(batch, self._options)
        self._drop_all(drops)
        if kept:
            yield kept


class IdentifyLanguages(ReportingDoFn):
    STAGE = reasons.LANGUAGE_ID

    def __init__(self, model_path: str | None, options, run: RunContext):
        super().__init__(run)
        self._model_path = model_path
        self._options = options

    def setup(self):
        path = self._model_path and io.local_copy(self._model_path)
        self._identifier = langid.FastTextIdentifier(path)

    def process(self, batch):
        kept, drops = langid.identify_batch(batch, self._identifier, self._options)
        self._report.count_language_id(kept, [drop.record for drop in drops])
        self._drop_all(drops)
        for record in kept:
            if record.pop(langid.UNVERIFIED, None):
                self._report.count_unverified(record)
                self._count("lang_unverified")
        if kept:
            yield kept


class _SmallestIdPerKey(beam.DoFn):
    """One round of exact dedup on ids: (key, (copy, later keys)) groups -> for the smallest copy, its next key
    and the rest; for every other copy, (copy, (reason, detail)) on ``verdict``. The group streams through once."""

    def __init__(self, reason: str):
        self._reason = reason

    def process(self, keyed_group):
        key, members = keyed_group
        for (copy, later_keys), kept in dedup.smallest_last(members, lambda member: member[0]):
            if not kept:
                yield beam.pvalue.TaggedOutput(_VERDICT, (copy, (self._reason, dedup.group_detail(key))))
            elif later_keys:
                yield later_keys[0], (copy, later_keys[1:])


class _DropDuplicates(ReportingDoFn):
    """(copy, tagged records and verdicts) -> the record, unless every one of it has a verdict. Records share an
    id and an origin only where they are interchangeable, so one is held whatever their number."""

    STAGE = reasons.DEDUP

    def process(self, joined):
        _, tagged = joined
        record, copies, verdicts = None, 0, Counter()
        for tag, value in tagged:
            if tag == _RECORD:
                record, copies = value, copies + 1
            else:
                verdicts[value] += 1
        for (reason, detail), count in sorted(verdicts.items()):
            for _ in range(count):
                self._drop_all([Drop(record, reason, detail)])
        if copies > verdicts.total():
            yield record


def _copy(record: dict) -> tuple[str, str]:
    """Which record this is: records with one id are interchangeable in a shard, not in the rejected samples,
    which name each one's origin; of equal ids, the smallest origin is kept."""
    return record[f.ID], record.get(f.ORIGIN, "")


class DedupExact(beam.PTransform):
    """Keep one record per key (the smallest id), key after key: ``keys`` are (key_fn, reason), a key_fn's None
    meaning never a duplicate, and a later key compares only the records the earlier ones kept.

    Only ids and origins travel through the groupings by key, which may be as large as a passage repeated in every record;
    the records meet their verdicts once, grouped by id and origin."""

    def __init__(self, keys, run: RunContext):
        super().__init__()
        self._keys = keys
        self._run = run

    def expand(self, records):
        key_fns = [key_fn for key_fn, _ in self._keys]

        def keyed_copy(record):
            keys = tuple(key_fn(record) or record[f.ID] for key_fn in key_fns)
            return keys[0], (_copy(record), keys[1:])

        members = records | "Keys" >> beam.Map(keyed_copy)
        verdicts = []
        for _, reason in self._keys:
            picked = (
                members
                | f"{reason}/Group" >> beam.GroupByKey()
                | f"{reason}/SmallestId" >> beam.ParDo(_SmallestIdPerKey(reason))
                .with_output_types(beam.typehints.KV[beam.typehints.Any, beam.typehints.Any])
                .with_outputs(_VERDICT, main="kept")
            )
            verdicts.append(picked[_VERDICT])
            members = picked.kept
        tagged = (
            records | "TagRecords" >> beam.Map(lambda record: (_copy(record), (_RECORD, record))),
            verdicts | "Verdicts" >> beam.Flatten() | "TagVerdicts" >> beam.MapTuple(
                lambda copy, verdict: (copy, (_VERDICT, verdict))
            ),
        )
        return (
            tagged
            | "Tagged" >> beam.Flatten()
            | "ByCopy" >> beam.GroupByKey()
            | "DropDuplicates" >> beam.ParDo(_DropDuplicates(self._run)).with_outputs(REPORT, main="kept")
        )


class _WriteShard(beam.DoFn):
    def __init__(self, output: str, schema, options: shards.ShardOptions):
        self._output = output
        self._schema = schema
        self._options = options

    def process(self, keyed_group):
        (source, index, count), packed_rows = keyed_group
        path = shards.shard_path(source, index, count, self._options.format)
        with io.create_atomically(io.join(self._output, path)) as stream:
            written = shards.write_shard(
                path, source, packed_rows, stream, self._schema, self._options.arrow_compression,
                self._options.format,
            )
        yield written


class WriteShards(beam.PTransform):
    """Records -> Arrow shards per source; emits (shard entry, lengths) for the manifest."""

    def __init__(self, output: str, schema, options: shards.ShardOptions):
        super().__init__()
        self._output = output
        self._schema = schema
        self._options = options

    @classmethod
    def for_options(cls, options, schema, destination: io.Destination) -> "WriteShards":
        """Shards in the run's staging directory, of --shard-size-mb, in --shard-format, with --shard-compression."""
        return cls(destination.staging, schema, options.shard_options())

    def expand(self, records):
        target = self._options.target_bytes
        counts = (
            records
            | "Size" >> beam.Map(lambda record: (record[f.SOURCE], shards.estimated_bytes(record)))
            | "SizePerSource" >> beam.CombinePerKey(sum)
            | "ShardCount" >> beam.MapTuple(lambda source, size: (source, shards.shard_count(size, target)))
        )

        schema = self._schema

        def assign(record, shard_counts):
            source = record[f.SOURCE]
            count = shard_counts[source]
            return (source, shards.shard_index(record[f.ID], count), count), shards.packed_row(record, schema)

        return (
            records
            | "Assign" >> beam.Map(assign, shard_counts=beam.pvalue.AsDict(counts))
            | "Group" >> beam.GroupByKey()
            | "Write" >> beam.ParDo(_WriteShard(self._output, self._schema, self._options))
        )


class MergeReports(beam.CombineFn):
    def __init__(self, sample_size: int):
        self._sample_size = sample_size

    def create_accumulator(self):
        return FunnelReport(self._sample_size)

    def add_input(self, accumulator, report):
        return accumulator.merge(report)

    def merge_accumulators(self, accumulators):
        merged = self.create_accumulator()
        for accumulator in accumulators:
            merged.merge(accumulator)
        return merged

    def extract_output(self, accumulator):
        return accumulator


class _WriteManifest(beam.DoFn):
    def __init__(self, output: str, pipeline: str, schema, options: dict, sampling_alpha: float, parent, teacher):
        self._output = output
        self._pipeline = pipeline
        self._schema = schema
        self._options = options
        self._sampling_alpha = sampling_alpha
        self._parent = parent
        self._teacher = teacher

    def process(self, _, written, report):
        manifest = build_manifest(
            self._pipeline, self._schema, self._options, report, written, self._sampling_alpha, self._parent,
            teacher=self._teacher,
        )
        for reason, sample in sorted(report.samples.items()):
            lines = "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in sample)
            io.write_atomically(io.join(self._output, REJECTED_DIR, f"{reason}.jsonl"), lines.encode("utf-8"))
        io.write_atomically(io.join(self._output, DATASET_CARD), dataset_card(manifest).encode("utf-8"))
        run_store.write_manifest(io, self._output, manifest)
        yield manifest


class PublishRun(beam.DoFn):
    def __init__(self, destination: io.Destination):
        self._destination = destination

    def process(self, manifest, *finished):
        io.publish_run(self._destination.staging, self._destination.output)
        yield manifest


class WriteManifest(beam.PTransform):
    """After every shard is written: rejected samples, then manifest.json (``parent``: the run a derived run read;
    ``teacher``: a teacher run's cross-encoder), in the staging directory; then, once ``finished`` (other writes
    of the run) are done too, the run is published into --output, replacing the earlier one."""

    def __init__(
        self, destination: io.Destination, pipeline: str, schema, options: dict, sampling_alpha: float,
        run: RunContext, parent=None, finished=(), teacher=None,
    ):
        super().__init__()
        self._destination = destination
        self._pipeline = pipeline
        self._schema = schema
        self._options = options
        self._sampling_alpha = sampling_alpha
        self._run = run
        self._parent = parent
        self._finished = finished
        self._teacher = teacher

    def expand(self, inputs):
        written, reports = inputs
        report = reports | "MergeReports" >> beam.CombineGlobally(MergeReports(self._run.sample_size))
        return (
            written.pipeline
            | "Once" >> beam.Create([None])
            | "Write" >> beam.ParDo(
                _WriteManifest(
                    self._destination.staging, self._pipeline, self._schema, self._options, self._sampling_alpha,
                    self._parent, self._teacher,
                ),
                written=beam.pvalue.AsList(written),
                report=beam.pvalue.AsSingleton(report),
            )
            # A step of its own: were it fused with Write, a retried bundle would stage a second manifest
            # after the run was published, and publish that manifest's files alone.
            | "Written" >> beam.Reshuffle()
            # Side inputs: the step waits until those writes are complete.
            | "Publish" >> beam.ParDo(
                PublishRun(self._destination), *(beam.pvalue.AsList(other) for other in self._finished)
            )
        )


class WriteDeadLetters(beam.PTransform):
    """Dead letters as JSON lines under dead_letter/ of ``output`` (a run's staging directory); emits the files."""

    def __init__(self, output: str):
        super().__init__()
        self._output = output

    def expand(self, dead_letters):
        return (
            dead_letters
            | "ToJson" >> beam.Map(lambda letter: json.dumps(letter, ensure_ascii=False, sort_keys=True))
            | "Write" >> beam.io.WriteToText(
                io.join(self._output, DEAD_LETTER_DIR, "dead_letter"), file_name_suffix=".jsonl"
            )
        )

