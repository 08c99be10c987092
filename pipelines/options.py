"""Command-line options of the mining pipelines, beside Beam's own."""

import dataclasses
import importlib.util
import math
import os

from apache_beam.options.pipeline_options import PipelineOptions

from mining import consistency, hard_negatives
from mining.consistency import ConsistencyOptions
from mining.hard_negatives import HardNegativeOptions
from mining.clean import CleanOptions
from mining.langid import LidOptions, bundled_model_path, model_label_set
from mining.minhash import Shingling
from mining.near_dup import NearDupOptions
from mining.run_store import SHARD_EXTENSIONS
from mining.shards import COMPRESSIONS, ShardOptions
from mining.sources import ReadLimits, SourceSpec
from pipelines import io
from pipelines.reporting import RunContext
from schemas.encoder_spec import EncoderSpec
from schemas.manifest import DEFAULT_SAMPLING_ALPHA

# pretrain, finetune and instruct mine sources; the others read a finished run (--input).
# generate asks an LLM for instruction data (its output is instruct's --source synthetic=OUTPUT/generations/*.jsonl).
PIPELINE_NAMES = ("pretrain", "finetune", "instruct", "consistency", "hardnegatives", "teacher", "generate")
_DEFAULT_NGRAM = {"char": 5, "word": 3}
ENCODE_BATCH_SIZE = 512  # texts per encoder call in the pipelines over a finished run


class _BothSpellings:
    """An argument group whose options are also accepted spelled with underscores, as Beam spells its own."""

    def __init__(self, group):
        self._group = group

    def add_argument(self, name: str, **kwargs):
        self._group.add_argument(*dict.fromkeys([name, "--" + name.removeprefix("--").replace("-", "_")]), **kwargs)


def _fail_in_one_line(message: str):
    raise SystemExit(message)


class MiningOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        # argparse would print the whole usage, every Beam option included, before its one-line complaint.
        parser.error = _fail_in_one_line
        group = _BothSpellings(parser.add_argument_group("mining"))
        group.add_argument("--pipeline", default="pretrain", choices=PIPELINE_NAMES, help="which pipeline to run")
        group.add_argument(
            "--source", action="append", default=None, metavar="KIND[:LANG]=PATTERN",
            help="input files (repeatable); without it, the bundled samples",
        )
        group.add_argument("--output", default="./output", help="output directory, local or gs://")
        group.add_argument(
            "--overwrite", action="store_true", help="replace an earlier run in --output (never other files)"
        )
        group.add_argument(
            "--quiet", action="store_true",
            help="no progress on stderr during a local run (none either when stderr is not a terminal)",
        )
        group.add_argument(
            "--lid-model", dest="lid_model", default=None,
            help="fastText language-ID model, local or gs:// (lid.176.bin or .ftz, GlotLID, OpenLID); "
            "default: the bundled lid.176.ftz",
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
        group.add_argument(
            "--near-dup", dest="near_dup", choices=("on", "off"), default="on",
            help="drop near-duplicates (MinHash-LSH), keeping the smallest id of each cluster",
        )
        group.add_argument(
            "--near-dup-threshold", dest="near_dup_threshold", type=float, default=NearDupOptions.threshold,
            help="Jaccard similarity of the shingles from which pairs are near-duplicates",
        )
        group.add_argument("--near-dup-num-perm", dest="near_dup_num_perm", type=int, default=NearDupOptions.num_perm)
        group.add_argument(
            "--near-dup-shingles", dest="near_dup_shingles", choices=("char", "word"), default="char",
            help="character n-grams (any script) or word n-grams of the normalised text",
        )
        group.add_argument(
            "--near-dup-ngram", dest="near_dup_ngram", type=int, default=None,
            help=f"shingle length; default {_DEFAULT_NGRAM['char']} characters or {_DEFAULT_NGRAM['word']} words",
        )
        group.add_argument(
            "--near-dup-hash", dest="near_dup_hash", choices=("sha1", "fast"), default=NearDupOptions.hash,
            help="shingle hash: fast is numpy's (datasketch's with hashfunc=mining.minhash.fast_hash32), "
            "sha1 is datasketch's default hash function",
        )
        group.add_argument(
            "--near-dup-text", dest="near_dup_text", choices=("passage", "pair"), default=NearDupOptions.text,
            help="compare passages (the pair where repeated passages are not duplicates, see --passage-dedup) "
            "or always query and passage together",
        )
        group.add_argument(
            "--near-dup-scope", dest="near_dup_scope", choices=("source", "all"), default=NearDupOptions.scope,
            help="compare pairs of one source and language pair, or of one language pair across sources",
        )
        group.add_argument(
            "--near-dup-rounds", dest="near_dup_rounds", type=int, default=NearDupOptions.rounds,
            help="large-star/small-star shuffle rounds that resolve clusters",
        )
        group.add_argument(
            "--exclude", action="append", default=None, metavar="PATTERN",
            help="benchmark files whose texts no pair may leak (repeatable): SQuAD .json, topics .tsv, "
            "or one text per line",
        )
        group.add_argument("--shard-size-mb", dest="shard_size_mb", type=float, default=ShardOptions.size_mb)
        group.add_argument(
            "--shard-compression", dest="shard_compression", choices=COMPRESSIONS, default=ShardOptions.compression,
            help="Arrow IPC buffer (or Parquet) compression (none keeps IPC shards memory-mappable)",
        )
        group.add_argument(
            "--shard-format", dest="shard_format", choices=tuple(SHARD_EXTENSIONS), default=ShardOptions.format,
            help="stream: Arrow IPC stream (.arrow, written and checked a batch at a time); file: Arrow IPC file "
            "(.arrow, for polars scan_ipc and duckdb); parquet (.parquet)",
        )
        group.add_argument(
            "--rejected-sample-size", dest="rejected_sample_size", type=int, default=RunContext.sample_size,
            help="dropped records kept per reason under rejected/",
        )
        group.add_argument(
            "--batch-size", dest="batch_size", type=int, default=RunContext.batch_size,
            help="records a stage handles per step",
        )
        derived = _BothSpellings(
            parser.add_argument_group("pipelines over a finished run (--pipeline consistency, hardnegatives, teacher)")
        )
        derived.add_argument("--input", default=None, help="the finished run (manifest + shards) to read")
        derived.add_argument(
            "--model", default=None, metavar="SPEC",
            help="encoder: a checkpoint or transformers path, st:PATH, or python:MODULE:CALLABLE; teacher: a "
            "sentence-transformers CrossEncoder path or hub id, or python:MODULE:CALLABLE (queries, passages) -> scores",
        )
        derived.add_argument(
            "--pool-size", dest="pool_size", type=int, default=ConsistencyOptions.pool_size,
            help="passages sampled (seeded) from the input that each pair's passage must outrank",
        )
        derived.add_argument(
            "--top-k", dest="top_k", type=float, default=ConsistencyOptions.top_k,
            help="keep pairs whose passage ranks this high (1 = best); below 1, a fraction of the pool",
        )
        derived.add_argument(
            "--seed", type=int, default=ConsistencyOptions.seed,
            help="seed of the pool sample; generate: of every draw and request",
        )
        derived.add_argument(
            "--encode-batch-size", dest="encode_batch_size", type=int, default=ENCODE_BATCH_SIZE,
            help="texts the encoder embeds per call",
        )
        derived.add_argument(
            "--device", choices=("cpu", "cuda"), default=None, help="where the encoder or cross-encoder runs; default: cuda if present"
        )
        derived.add_argument(
            "--corpus", default=None, help="hardnegatives: a finished run whose passages are searched; default --input"
        )
        derived.add_argument(
            "--rank-window", dest="rank_window", default=HardNegativeOptions.rank_window, metavar="FIRST:LAST",
            help="hardnegatives: negatives come from these ranks of each query's search results",
        )
        derived.add_argument(
            "--num-negatives", dest="num_negatives", type=int, default=HardNegativeOptions.num_negatives,
            help="hardnegatives: negatives per row",
        )
        derived.add_argument(
            "--max-score", dest="max_score", type=float, default=HardNegativeOptions.max_score,
            help="hardnegatives: skip candidates whose score (cosine) is above this, as likely false negatives",
        )
        derived.add_argument(
            "--cross-encoder", dest="cross_encoder", default=None, metavar="SPEC",
            help="hardnegatives: score the window's candidates and the positive with this cross-encoder (as --model "
            "of teacher) for --max-score and --relative-margin; default: the encoder's cosine",
        )
        derived.add_argument(
            "--relative-margin", dest="relative_margin", type=float, default=HardNegativeOptions.relative_margin,
            help="hardnegatives: skip candidates scoring above (1 - margin) x the positive's score",
        )
        generate = _BothSpellings(parser.add_argument_group("generation (--pipeline generate)"))
        generate.add_argument(
            "--generations", type=int, default=100, help="generations in all, spread over the task types in turn"
        )
        generate.add_argument(
            "--task-types", dest="task_types", default=None, metavar="TYPE,...",
            help="comma-separated task types (short-long, long-short, short-short, long-long, sts, bitext); "
            "default all",
        )
        generate.add_argument(
            "--brainstorm-requests", dest="brainstorm_requests", type=int, default=1,
            help="brainstorm prompts per task type (about 20 tasks each, deduplicated); sts and bitext take none",
        )
        generate.add_argument(
            "--llm-base-url", dest="llm_base_url", default="https://api.openai.com/v1",
            help="an OpenAI-compatible endpoint, ending in /v1; its key is read from OPENAI_API_KEY",
        )
        generate.add_argument("--llm-model", dest="llm_model", default=None, help="the model to ask (required)")
        generate.add_argument(
            "--llm-concurrency", dest="llm_concurrency", type=int, default=8, help="requests in flight per worker"
        )
        generate.add_argument(
            "--llm-requests-per-minute", dest="llm_requests_per_minute", type=float, default=None,
            help="per worker; default no limit",
        )
        generate.add_argument(
            "--llm-tokens-per-minute", dest="llm_tokens_per_minute", type=float, default=None,
            help="prompt + completion tokens per worker (estimated until usage is reported); default no limit",
        )
        generate.add_argument(
            "--llm-max-retries", dest="llm_max_retries", type=int, default=6,
            help="retries of a request after a 429, 5xx, timeout or broken response; then it is dead-lettered",
        )
        generate.add_argument(
            "--llm-timeout", dest="llm_timeout", type=float, default=120.0, help="seconds an attempt may take"
        )
        generate.add_argument(
            "--llm-backoff", dest="llm_backoff", type=float, default=1.0,
            help="seconds: retry n waits a random time up to backoff * 2^n (at least a 429's Retry-After)",
        )
        generate.add_argument("--llm-temperature", dest="llm_temperature", type=float, default=1.0)
        generate.add_argument("--llm-top-p", dest="llm_top_p", type=float, default=1.0)
        generate.add_argument("--llm-max-tokens", dest="llm_max_tokens", type=int, default=2048)
        generate.add_argument(
            "--price-per-1k-input", dest="price_per_1k_input", type=float, default=None,
            help="US dollars per 1,000 prompt tokens; default mining.generation.PRICES_PER_1K's",
        )
        generate.add_argument(
            "--price-per-1k-output", dest="price_per_1k_output", type=float, default=None,
            help="US dollars per 1,000 completion tokens",
        )
        generate.add_argument(
            "--no-cache", dest="no_cache", action="store_true",
            help="neither read nor write OUTPUT/llm_cache: every prompt is sent",
        )
        group.add_argument(
            "--sampling-alpha", dest="sampling_alpha", type=float, default=DEFAULT_SAMPLING_ALPHA,
            help="the manifest's per-source training weights are output^alpha, normalised",
        )

    def validate(self) -> None:
        """ValueError naming the first option out of its range or naming a missing file; checked before any work."""
        for option, value, allowed, description in (
            ("--lid-threshold", self.lid_threshold, lambda v: 0 <= v <= 1, "between 0 and 1"),
            ("--lid-min-bytes", self.lid_min_bytes, lambda v: v >= 0, "at least 0"),
            ("--max-query-chars", self.max_query_chars, lambda v: v >= 1, "at least 1"),
            ("--max-passage-chars", self.max_passage_chars, lambda v: v >= 1, "at least 1"),
            ("--max-line-bytes", self.max_line_bytes, lambda v: v >= 1, "at least 1"),
            # MinHash-LSH needs a threshold strictly inside (0, 1) to choose its bands.
            ("--near-dup-threshold", self.near_dup_threshold, lambda v: 0 < v < 1, "between 0 and 1, both excluded"),
            ("--near-dup-num-perm", self.near_dup_num_perm, lambda v: v >= 1, "at least 1"),
            ("--near-dup-ngram", self.near_dup_ngram, lambda v: v is None or v >= 1, "at least 1"),
            ("--near-dup-rounds", self.near_dup_rounds, lambda v: v >= 1, "at least 1"),
            ("--shard-size-mb", self.shard_size_mb, lambda v: v * 2**20 >= 1, "at least one byte (2**-20)"),
            ("--rejected-sample-size", self.rejected_sample_size, lambda v: v >= 0, "at least 0"),
            ("--batch-size", self.batch_size, lambda v: v >= 1, "at least 1"),
            ("--encode-batch-size", self.encode_batch_size, lambda v: v >= 1, "at least 1"),
            ("--pool-size", self.pool_size, lambda v: v >= 1, "at least 1"),
            ("--num-negatives", self.num_negatives, lambda v: v >= 1, "at least 1"),
            # Scores are cosines of normalised embeddings.
            ("--max-score", self.max_score, lambda v: v is None or -1 <= v <= 1, "between -1 and 1"),
            ("--relative-margin", self.relative_margin, lambda v: v is None or 0 <= v <= 1, "between 0 and 1"),
            # 0 weighs every source alike, 1 by its size; beyond, the weights leave that span.
            ("--sampling-alpha", self.sampling_alpha, lambda v: 0 <= v <= 1, "between 0 and 1"),
            ("--generations", self.generations, lambda v: v >= 1, "at least 1"),
            ("--brainstorm-requests", self.brainstorm_requests, lambda v: v >= 1, "at least 1"),
            ("--llm-concurrency", self.llm_concurrency, lambda v: 1 <= v <= 1024, "between 1 and 1024"),
            ("--llm-requests-per-minute", self.llm_requests_per_minute, lambda v: v is None or v > 0, "above 0"),
            ("--llm-tokens-per-minute", self.llm_tokens_per_minute, lambda v: v is None or v > 0, "above 0"),
            ("--llm-max-retries", self.llm_max_retries, lambda v: 0 <= v <= 100, "between 0 and 100"),
            ("--llm-timeout", self.llm_timeout, lambda v: v > 0, "above 0"),
            ("--llm-backoff", self.llm_backoff, lambda v: 0 <= v <= 3600, "between 0 and 3600"),
            ("--llm-temperature", self.llm_temperature, lambda v: 0 <= v <= 2, "between 0 and 2"),
            ("--llm-top-p", self.llm_top_p, lambda v: 0 < v <= 1, "above 0 and at most 1"),
            ("--llm-max-tokens", self.llm_max_tokens, lambda v: v >= 1, "at least 1"),
            ("--price-per-1k-input", self.price_per_1k_input, lambda v: v is None or v >= 0, "at least 0"),
            ("--price-per-1k-output", self.price_per_1k_output, lambda v: v is None or v >= 0, "at least 0"),
        ):
            if not (value is None or math.isfinite(value)) or not allowed(value):
                raise ValueError(f"{option} must be {description}, not {value}")
        consistency.resolve_top_k(self.top_k, self.pool_size)
        hard_negatives.parse_rank_window(self.rank_window)
        if self.lid_model and not io.is_file(self.lid_model):
            raise ValueError(f"--lid-model {self.lid_model}: no such file")
        if self.lid_model:
            self.lid_labels()
        for option, spec in (("--model", self.model), ("--cross-encoder", self.cross_encoder)):
            if spec:
                _check_model_spec(option, spec)
        if self.cross_encoder and self.pipeline != "hardnegatives":
            raise ValueError("--cross-encoder is an option of --pipeline hardnegatives")
        if self.cross_encoder and self.max_score is None and self.relative_margin is None:
            raise ValueError("--cross-encoder scores for --max-score and --relative-margin: give either")

    def anchor_local_paths(self) -> None:
        """Every local path made absolute here, in the launching process: workers started in another directory
        (a worker pool, a job server's) would resolve a relative one, ./output above all, in theirs."""
        self.output = io.anchored(self.output)
        for name in ("input", "corpus", "lid_model"):
            if getattr(self, name):
                setattr(self, name, io.anchored(getattr(self, name)))
        self.exclude = self.exclude and [io.anchored(pattern) for pattern in self.exclude]
        if self.source:
            specs = [SourceSpec.parse(text) for text in self.source]
            self.source = [str(dataclasses.replace(spec, pattern=io.anchored(spec.pattern))) for spec in specs]
        for name in ("model", "cross_encoder"):
            try:
                spec = getattr(self, name) and EncoderSpec.parse(getattr(self, name))
            except ValueError:
                continue  # validate() names the option in its message
            # Only a path that exists here: anything else is a hub id, or an error the checks report as given.
            if spec and spec.path and os.path.exists(os.path.expanduser(spec.path)):
                prefix = spec.text.removesuffix(spec.path)
                setattr(self, name, prefix + io.anchored(spec.path))

    def read_paths(self) -> list[tuple[str, str]]:
        """(option, path or glob) of what a run reads besides its --source files."""
        return [
            (option, path)
            for option, path in (
                ("--input", self.input), ("--corpus", self.corpus), ("--lid-model", self.lid_model),
                ("--model", self.model and EncoderSpec.parse(self.model).path),
                ("--cross-encoder", self.cross_encoder and EncoderSpec.parse(self.cross_encoder).path),
                *(("--exclude", pattern) for pattern in self.exclude or []),
            )
            if path
        ]

    def run_context(self) -> RunContext:
        return RunContext(batch_size=self.batch_size, sample_size=self.rejected_sample_size)

    def shard_options(self) -> ShardOptions:
        return ShardOptions(size_mb=self.shard_size_mb, compression=self.shard_compression, format=self.shard_format)

    def recorded_output_options(self) -> dict:
        """What the manifest of every pipeline records of how its output was written."""
        return {
            "shard_size_mb": self.shard_size_mb,
            "shard_compression": self.shard_compression,
            "shard_format": self.shard_format,
            "rejected_sample_size": self.rejected_sample_size,
            "sampling_alpha": self.sampling_alpha,
        }

    def consistency_options(self) -> ConsistencyOptions:
        return ConsistencyOptions(pool_size=self.pool_size, top_k=self.top_k, seed=self.seed)

    def hard_negative_options(self) -> HardNegativeOptions:
        return HardNegativeOptions(
            rank_window=self.rank_window, num_negatives=self.num_negatives,
            max_score=self.max_score, relative_margin=self.relative_margin,
        )

    def clean_options(self) -> CleanOptions:
        return CleanOptions(max_query_chars=self.max_query_chars, max_passage_chars=self.max_passage_chars)

    def lid_labels(self) -> list[str]:
        """The --lid-model's labels as language ID reads them (mining.languages.model_label); ValueError for a
        file that is no fastText model."""
        path = self.lid_model or bundled_model_path()
        try:
            with io.open_file(path) as stream:
                return model_label_set(stream)
        except ValueError as error:
            raise ValueError(f"--lid-model {path}: {error}") from None

    def lid_options(self) -> LidOptions:
        return LidOptions(threshold=self.lid_threshold, min_bytes=self.lid_min_bytes)

    def read_limits(self) -> ReadLimits:
        return ReadLimits(max_line_bytes=self.max_line_bytes)

    def near_dup_options(self) -> NearDupOptions | None:
        if self.near_dup == "off":
            return None
        return NearDupOptions(
            threshold=self.near_dup_threshold,
            num_perm=self.near_dup_num_perm,
            shingling=Shingling(self.near_dup_shingles, self.near_dup_ngram or _DEFAULT_NGRAM[self.near_dup_shingles]),
            hash=self.near_dup_hash,
            text=self.near_dup_text,
            scope=self.near_dup_scope,
            rounds=self.near_dup_rounds,
        )


def _check_model_spec(option: str, text: str) -> None:
    """What can be checked of a model option without loading it: a python: module that exists, a local path that
    exists. A name that is no path may be a hub id, which only loading can tell."""
    try:
        spec = EncoderSpec.parse(text)
    except ValueError as error:
        raise ValueError(f"{option} {text}: {error}") from None
    if spec.module is not None and importlib.util.find_spec(spec.module) is None:
        raise ValueError(f"{option} {text}: python:MODULE:CALLABLE needs an importable module and a callable name")
    if spec.names_a_file:
        try:
            io.model_files(os.path.expanduser(spec.path).rstrip("/"))
        except FileNotFoundError:
            raise ValueError(f"{option} {text}: no such file or directory") from None
