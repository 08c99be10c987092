"""Command-line options of the mining pipelines, beside Beam's own."""

from apache_beam.options.pipeline_options import PipelineOptions

from mining.clean import CleanOptions
from mining.langid import LidOptions
from mining.sources import ReadLimits

PIPELINE_NAMES = ("pretrain", "finetune")


class MiningOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        group = parser.add_argument_group("mining")
        group.add_argument("--pipeline", default="pretrain", choices=PIPELINE_NAMES, help="which pipeline to run")
        group.add_argument(
            "--source", action="append", default=None, metavar="KIND[:LANG]=PATTERN",
            help="input files (repeatable); without it, the bundled samples",
        )
        group.add_argument("--output", default="./output", help="output directory, local or gs://")
        group.add_argument(
            "--lid-model", dest="lid_model", default=None,
            help="fastText language-ID model (lid.176.bin or .ftz); default: the bundled lid.176.ftz",
        )
        group.add_argument("--lid-threshold", dest="lid_threshold", type=float, default=LidOptions.threshold)
        group.add_argument(
            "--lid-min-bytes", dest="lid_min_bytes", type=int, default=LidOptions.min_bytes,
            help="sides shorter than this (UTF-8 bytes) are not identified on their own",
        )
        group.add_argument("--max-query-chars", dest="max_query_chars", type=int, default=CleanOptions.max_query_chars)
        group.add_argument(
            "--max-passage-chars", dest="max_passage_chars", type=int, default=CleanOptions.max_passage_chars
        )
        group.add_argument(
            "--max-line-bytes", dest="max_line_bytes", type=int, default=ReadLimits.max_line_bytes,
            help="longer input lines are dead-lettered",
        )
        group.add_argument(
            "--passage-dedup", dest="passage_dedup", choices=("auto", "on", "off"), default="auto",
            help="drop repeated passages within a source; auto: per source kind",
        )
        group.add_argument("--shard-size-mb", dest="shard_size_mb", type=float, default=128.0)
        group.add_argument(
            "--shard-compression", dest="shard_compression", choices=("none", "zstd", "lz4"), default="none",
            help="Arrow IPC buffer compression (none keeps shards memory-mappable)",
        )
        group.add_argument(
            "--rejected-sample-size", dest="rejected_sample_size", type=int, default=100,
            help="dropped records kept per reason under rejected/",
        )
        group.add_argument("--batch-size", dest="batch_size", type=int, default=512, help="records per bundle step")
        group.add_argument(
            "--sampling-alpha", dest="sampling_alpha", type=float, default=0.5,
            help="the manifest's per-source training weights are output^alpha, normalised",
        )

    def clean_options(self) -> CleanOptions:
        return CleanOptions(max_query_chars=self.max_query_chars, max_passage_chars=self.max_passage_chars)

    def lid_options(self) -> LidOptions:
        return LidOptions(threshold=self.lid_threshold, min_bytes=self.lid_min_bytes)

    def read_limits(self) -> ReadLimits:
        return ReadLimits(max_line_bytes=self.max_line_bytes)
