"""The mining pipelines: read -> join -> clean -> decontaminate -> language ID -> exact dedup -> near dedup
-> shards + manifest.

``pretrain``, ``finetune`` and ``instruct`` share every stage; fine-tuning rows add a task;
instruction rows (LLM generations) keep the raw query through the stages, so the same example
under two instructions is one pair for dedup, and are formatted with their instruction at write time.
"""

from dataclasses import dataclass
from importlib import resources

import apache_beam as beam

from mining import dedup, instruct
from mining.sources import ReadTask, SourceReader, SourceSpec, get_reader
from pipelines import io, reporting, stages
from pipelines.decontaminate import Decontaminate, excluded_files
from pipelines.near_dup import NearDedup
from pipelines.options import MiningOptions
from schemas import reasons
from schemas import pairs as f
from schemas.pairs import SCHEMA_BY_PIPELINE

BUNDLED_KINDS = {
    "pretrain": ("sbert", "nllb", "ccnews", "wikipedia", "mc4", "reddit", "s2orc", "stackexchange", "xp3"),
    "finetune": ("squad", "msmarco", "retrieval", "nli", "miracl", "dpr", "beir", "mrtydi", "quora", "eli5", "dureader"),
    "instruct": ("synthetic",),
}


def bundled_sources(pipeline: str) -> list[str]:
    samples = resources.files("mining") / "samples"
    return [f"{kind}={samples / kind}/**" for kind in BUNDLED_KINDS[pipeline]]


def resolve_passage_dedup(specs: list[SourceSpec], setting: str) -> dict[str, bool]:
    """--passage-dedup per source (a kind, and the sources a reader splits its kind into): whether repeated
    passages are duplicates."""
    passage_dedup_by_source = {}
    for spec in specs:
        reader = get_reader(spec.kind)
        for source in (spec.kind, *getattr(reader, "sources", ())):
            passage_dedup_by_source[source] = reader.passage_dedup if setting == "auto" else setting == "on"
    return passage_dedup_by_source


def recorded_options(
    options: MiningOptions, specs: list[SourceSpec], passage_dedup_by_source: dict[str, bool]
) -> dict:
    """What the manifest records: everything that shapes the output."""
    near_dup = options.near_dup_options()
    return {
        "sources": [str(spec) for spec in specs],
        "lid_model": options.lid_model or "lid.176.ftz (bundled)",
        "lid_labels": options.lid_labels(),
        "lid_threshold": options.lid_threshold,
        "lid_min_bytes": options.lid_min_bytes,
        "max_query_chars": options.max_query_chars,
        "max_passage_chars": options.max_passage_chars,
        "max_line_bytes": options.max_line_bytes,
        "passage_dedup": passage_dedup_by_source,
        "near_dup": near_dup.describe() if near_dup else "off",
        "exclude": options.exclude or [],
        **options.recorded_output_options(),
    }


def join_rounds(read, readers, run: reporting.RunContext, reports: reporting.Reports) -> tuple[list, list]:
    """Shuffle rounds for the sources that join records; their pair batches and dead letters."""
    pairs, dead_letters = [], []
    parts = read[stages.JOIN]
    for round_index in range(max((reader.join_rounds for reader in readers), default=0)):
        current, later = parts | f"Join{round_index}/Round" >> beam.Partition(
            lambda keyed_part, _, index=round_index: 0 if keyed_part[1].round == index else 1, 2
        )
        joined = reports.add(
            current
            | f"Join{round_index}/Group" >> beam.GroupByKey()
            | f"Join{round_index}/Pairs" >> beam.ParDo(
                stages.JoinGroups(round_index, run)
            ).with_outputs(stages.JOIN, reporting.REPORT, reporting.DEAD, main="pairs")
        )
        pairs.append(joined.pairs)
        dead_letters.append(joined[reporting.DEAD])
        parts = (later, joined[stages.JOIN]) | f"Join{round_index}/Next" >> beam.Flatten()
    return pairs, dead_letters


@dataclass(frozen=True)
class SourcePlan:
    specs: list[SourceSpec]
    readers: list[SourceReader]
    tasks: list[ReadTask]
    excluded: list[str]  # benchmark files for decontamination


def plan_sources(options: MiningOptions) -> SourcePlan:
    """Parse --source and match its (and --exclude's) files, before any work starts: a bad
    spec or a glob that matches nothing raises ValueError or FileNotFoundError naming it."""
    specs = [SourceSpec.parse(text) for text in options.source or bundled_sources(options.pipeline)]
    readers = [get_reader(spec.kind) for spec in specs]
    tasks = [task for spec, reader in zip(specs, readers, strict=True) for task in reader.plan(spec, io.match_files)]
    return SourcePlan(specs, readers, tasks, excluded_files(options.exclude or []))


def build(pipeline: beam.Pipeline, options: MiningOptions, plan: SourcePlan, destination: io.Destination) -> None:
    specs, readers, tasks = plan.specs, plan.readers, plan.tasks
    schema = SCHEMA_BY_PIPELINE[options.pipeline]
    passage_dedup_by_source = resolve_passage_dedup(specs, options.passage_dedup)
    run = options.run_context()
    reports = reporting.Reports()

    read = reports.add(
        pipeline
        | "Tasks" >> beam.Create(tasks)
        | "Spread" >> beam.Reshuffle()
        | "Read" >> beam.ParDo(stages.ReadBatches(options.read_limits(), run))
        .with_outputs(reporting.DEAD, reporting.REPORT, stages.JOIN, main="pairs")
    )
    joined_pairs, join_dead_letters = join_rounds(read, readers, run, reports)
    # A big file is read by one worker; spreading its batches lets every worker clean and identify them.
    spread = [read.pairs, *joined_pairs] | "AllPairs" >> beam.Flatten() | "Rebalance" >> beam.Reshuffle()
    screened = reports.add(
        spread | "Clean" >> beam.ParDo(stages.CleanBatches(options.clean_options(), run)).with_outputs(
            reporting.REPORT, main="pairs"
        )
    ).pairs
    if options.exclude:
        screened = reports.add(screened | "Decontaminate" >> Decontaminate(plan.excluded, run)).pairs
    if options.pipeline == "instruct":
        screened = screened | "InstructionIds" >> beam.Map(instruct.with_instruction_ids)
    identified = reports.add(
        screened | "LanguageID" >> beam.ParDo(
            stages.IdentifyLanguages(options.lid_model, options.lid_options(), run)
        ).with_outputs(reporting.REPORT, main="pairs")
    )

    def passage_key(record):
        return dedup.passage_key(record) if passage_dedup_by_source[record[f.SOURCE]] else None

    distinct = reports.add(
        identified.pairs
        | "Unbatch" >> beam.FlatMap(lambda batch: batch)
        | "Dedup" >> stages.DedupExact(
            [(dedup.pair_key, reasons.DUPLICATE_PAIR), (passage_key, reasons.DUPLICATE_PASSAGE)], run
        )
    ).kept
    if near_dup_options := options.near_dup_options():
        near_unique = distinct | "NearDedup" >> NearDedup(near_dup_options, passage_dedup_by_source, run)
        distinct = reports.add(near_unique).kept
    if options.pipeline == "instruct":
        distinct = reports.add(
            distinct | "FormatQueries" >> beam.ParDo(stages.FormatInstructionRows(run)).with_outputs(
                reporting.REPORT, main="rows"
            )
        ).rows
    shard_entries = distinct | "WriteShards" >> stages.WriteShards.for_options(options, schema, destination)
    dead_letter_files = (
        [read[reporting.DEAD], *join_dead_letters]
        | "AllDeadLetters" >> beam.Flatten()
        | "DeadLetters" >> stages.WriteDeadLetters(destination.staging)
    )
    (shard_entries, reports.merged()) | "Manifest" >> stages.WriteManifest(
        destination, options.pipeline, schema, recorded_options(options, specs, passage_dedup_by_source),
        options.sampling_alpha, run, finished=[dead_letter_files],
    )
