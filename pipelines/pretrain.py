"""The pre-training pairs pipeline: read -> clean -> language ID -> exact dedup -> shards + manifest."""

from importlib import resources

import apache_beam as beam

from mining import dedup
from mining.sources import SourceSpec, get_reader
from pipelines import io, stages
from pipelines.options import MiningOptions
from schemas import pairs as f

NAME = "pretrain"


def bundled_sources() -> list[str]:
    samples = resources.files("mining") / "samples"
    return [f"{kind}={samples / kind}/*" for kind in ("sbert", "nllb", "ccnews")]


def passage_dedup_sources(specs: list[SourceSpec], setting: str) -> dict[str, bool]:
    """Per source kind: whether repeated passages are duplicates."""
    if setting == "auto":
        return {spec.kind: get_reader(spec.kind).dedup_passage for spec in specs}
    return {spec.kind: setting == "on" for spec in specs}


def recorded_options(options: MiningOptions, specs: list[SourceSpec], passage_dedup: dict[str, bool]) -> dict:
    """What the manifest records: everything that shapes the output."""
    return {
        "sources": [str(spec) for spec in specs],
        "lid_model": options.lid_model or "lid.176.ftz (bundled)",
        "lid_threshold": options.lid_threshold,
        "lid_min_bytes": options.lid_min_bytes,
        "max_query_chars": options.max_query_chars,
        "max_passage_chars": options.max_passage_chars,
        "max_line_bytes": options.max_line_bytes,
        "passage_dedup": passage_dedup,
        "shard_size_mb": options.shard_size_mb,
        "shard_compression": options.shard_compression,
        "rejected_sample_size": options.rejected_sample_size,
    }


def build(pipeline: beam.Pipeline, options: MiningOptions) -> None:
    specs = [SourceSpec.parse(text) for text in options.source or bundled_sources()]
    tasks = [task for spec in specs for task in get_reader(spec.kind).plan(spec, io.match_files)]
    passage_dedup = passage_dedup_sources(specs, options.passage_dedup)
    sample_size = options.rejected_sample_size
    output = options.output

    read = (
        pipeline
        | "Tasks" >> beam.Create(tasks)
        | "Spread" >> beam.Reshuffle()
        | "Read" >> beam.ParDo(stages.ReadBatches(options.read_limits(), options.batch_size, sample_size))
        .with_outputs(stages.DEAD, stages.REPORT, main="pairs")
    )
    cleaned = read.pairs | "Clean" >> beam.ParDo(
        stages.CleanBatches(options.clean_options(), sample_size)
    ).with_outputs(stages.REPORT, main="pairs")
    identified = cleaned.pairs | "LanguageID" >> beam.ParDo(
        stages.IdentifyLanguages(options.lid_model, options.lid_options(), sample_size)
    ).with_outputs(stages.REPORT, main="pairs")

    def passage_key(record):
        return dedup.passage_key(record) if passage_dedup[record[f.SOURCE]] else None

    unique_pairs = (
        identified.pairs
        | "Unbatch" >> beam.FlatMap(lambda batch: batch)
        | "DedupPairs" >> stages.DedupExact(dedup.pair_key, dedup.DUPLICATE_PAIR, sample_size)
    )
    unique = unique_pairs.kept | "DedupPassages" >> stages.DedupExact(
        passage_key, dedup.DUPLICATE_PASSAGE, sample_size
    )
    shard_entries = unique.kept | "WriteShards" >> stages.WriteShards(
        output, int(options.shard_size_mb * 2**20), None if options.shard_compression == "none" else options.shard_compression
    )
    read[stages.DEAD] | "DeadLetters" >> stages.WriteDeadLetters(output)
    reports = [stage[stages.REPORT] for stage in (read, cleaned, identified, unique_pairs, unique)]
    (shard_entries, reports | "Reports" >> beam.Flatten()) | "Manifest" >> stages.WriteManifest(
        output, NAME, recorded_options(options, specs, passage_dedup), sample_size
    )
