"""``manifest.json``: what a pipeline run wrote, and how every input record ended."""

import datetime
import math
import posixpath
from collections import Counter

import pydantic
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, field_validator, model_validator

SCHEMA_VERSION = 1
# Length histograms: bin 0 counts empty texts, bin i texts of [2^(i-1), 2^i) characters.
LENGTH_BINS = 18
MANIFEST_NAME = "manifest.json"
DATASET_CARD = "README.md"  # beside the manifest: what Hugging Face datasets reads a run's layout from
SHARDS_DIR = "shards"
# A source's share of training batches is rows^alpha / sum: the manifest's weights and the trainer's draws.
DEFAULT_SAMPLING_ALPHA = 0.5
DEAD_LETTER_DIR = "dead_letter"
REJECTED_DIR = "rejected"
# A generation run (--pipeline generate): its generations as JSON lines, and the LLM response cache, which
# outlives the run (an --overwrite of the same output keeps it: see pipelines.io.publish_run).
GENERATIONS_DIR = "generations"
LLM_CACHE_DIR = "llm_cache"
# Consistency ranks: bins 1, 2, 3-4, 5-8, ... up to 2^RANK_BINS_LOG2, then "beyond".
RANK_BINS_LOG2 = 16
RANK_BIN_LABELS = ("1", "2", *(f"{2 ** (i - 1) + 1}-{2 ** i}" for i in range(2, RANK_BINS_LOG2 + 1)), "beyond")
# Language-ID scores: bin i holds probabilities in [i/10, (i+1)/10), the last one 1.0 too.
LID_SCORE_BINS = 10
# A refused manifest's message names this many problems at most: one line, however broken the file.
_PROBLEMS_SHOWN = 5


def rank_bin_label(rank: int) -> str:
    """The histogram bin of a rank >= 1: bin i holds (2^(i-1), 2^i]."""
    return RANK_BIN_LABELS[min((rank - 1).bit_length(), RANK_BINS_LOG2 + 1)]


class _Strict(BaseModel):
    # Nested models are checked again where they are assembled: build_manifest merges lengths after creating them.
    model_config = ConfigDict(extra="forbid", revalidate_instances="always")


class LengthStats(_Strict):
    """Text lengths in characters: exact count and sum, power-of-two histogram."""

    count: NonNegativeInt = 0
    sum: NonNegativeInt = 0
    histogram: list[NonNegativeInt] = Field(default_factory=lambda: [0] * LENGTH_BINS)

    @field_validator("histogram")
    @classmethod
    def _bins(cls, histogram: list[int]) -> list[int]:
        if len(histogram) != LENGTH_BINS:
            raise ValueError(f"a length histogram has {LENGTH_BINS} bins, not {len(histogram)}")
        return histogram

    @model_validator(mode="after")
    def _counted_once(self):
        if sum(self.histogram) != self.count:
            raise ValueError(f"count {self.count} != {sum(self.histogram)} texts in the histogram")
        return self

    def add(self, length: int) -> None:
        self.count += 1
        self.sum += length
        self.histogram[min(length.bit_length(), LENGTH_BINS - 1)] += 1

    def merge(self, other: "LengthStats") -> None:
        self.count += other.count
        self.sum += other.sum
        self.histogram = [a + b for a, b in zip(self.histogram, other.histogram, strict=True)]


def lid_score_bin(score: float) -> int:
    return min(int(score * LID_SCORE_BINS), LID_SCORE_BINS - 1)


class ScoreHistogram(_Strict):
    """One side's language-ID scores: a count per tenth of probability, and the sides left unscored."""

    bins: list[NonNegativeInt] = Field(default_factory=lambda: [0] * LID_SCORE_BINS)
    unscored: NonNegativeInt = Field(default=0, description="sides too short to identify, or kept unverified")

    @field_validator("bins")
    @classmethod
    def _bins(cls, bins: list[int]) -> list[int]:
        if len(bins) != LID_SCORE_BINS:
            raise ValueError(f"a score histogram has {LID_SCORE_BINS} bins, not {len(bins)}")
        return bins


class LidScores(_Strict):
    """The pairs language ID kept: fastText's probability of each side's recorded language."""

    query: ScoreHistogram = Field(default_factory=ScoreHistogram)
    passage: ScoreHistogram = Field(default_factory=ScoreHistogram)


class SideLengths(_Strict):
    query: LengthStats = Field(default_factory=LengthStats)
    passage: LengthStats = Field(default_factory=LengthStats)

    @model_validator(mode="after")
    def _one_passage_per_query(self):
        if self.query.count != self.passage.count:
            raise ValueError(f"query.count {self.query.count} != passage.count {self.passage.count}")
        return self

    def merge(self, other: "SideLengths") -> None:
        self.query.merge(other.query)
        self.passage.merge(other.passage)


def _relative_inside(path: str) -> str:
    """A manifest never points a reader outside its own directory."""
    normalised = posixpath.normpath(path)
    if "://" in path or path.startswith(("/", "\\")) or normalised.startswith("..") or normalised == ".":
        raise ValueError(f"shard path {path!r} must be relative and inside the output directory")
    return path


class Shard(_Strict):
    path: str = Field(description="relative to the output directory")
    rows: int = Field(ge=0)
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    source: str
    languages: dict[str, NonNegativeInt] = Field(
        description="rows with this language on either side"
    )
    language_pairs: dict[str, dict[str, NonNegativeInt]] = Field(
        default_factory=dict, description="rows per query language, then per passage language"
    )

    @field_validator("path")
    @classmethod
    def _inside_the_directory(cls, path: str) -> str:
        return _relative_inside(path)

    @model_validator(mode="after")
    def _languages_of_its_rows(self):
        for lang, rows in self.languages.items():
            if rows > self.rows:
                raise ValueError(f"languages.{lang} {rows} > rows {self.rows}")
        return self

    def pair_problems(self) -> list[str]:
        """Where ``language_pairs`` (when recorded) disagrees with the shard's rows or its ``languages``."""
        if not self.language_pairs:
            return []
        paired, either_side = 0, Counter()
        for query_lang, by_passage in self.language_pairs.items():
            for passage_lang, rows in by_passage.items():
                paired += rows
                either_side.update(dict.fromkeys({query_lang, passage_lang}, rows))
        problems = [f"language_pairs count {paired} rows, not rows {self.rows}"] if paired != self.rows else []
        if +either_side != +Counter(self.languages):
            problems.append("languages are not those of language_pairs, each row once per language")
        return problems


class Totals(_Strict):
    """Record accounting: input == output + sum(dropped) + dead_letter."""

    input: NonNegativeInt = 0
    output: NonNegativeInt = 0
    dropped: dict[str, NonNegativeInt] = Field(default_factory=dict)
    dead_letter: NonNegativeInt = 0

    @model_validator(mode="after")
    def _conserved(self):
        accounted = self.output + sum(self.dropped.values()) + self.dead_letter
        if accounted != self.input:
            raise ValueError(
                f"records not conserved: input {self.input} != output {self.output}"
                f" + dropped {sum(self.dropped.values())} + dead_letter {self.dead_letter}"
            )
        return self


class LanguageTotals(_Strict):
    """One declared language of a mined source: records in = output + dropped (dead letters have no language)."""

    input: NonNegativeInt = 0
    output: NonNegativeInt = 0
    dropped: dict[str, NonNegativeInt] = Field(default_factory=dict)
    unverified: NonNegativeInt = Field(
        default=0, description="pairs language ID kept with a side whose declared language the model has no label for"
    )

    @model_validator(mode="after")
    def _conserved(self):
        if self.input != self.output + sum(self.dropped.values()):
            raise ValueError(f"input {self.input} != output {self.output} + dropped {sum(self.dropped.values())}")
        return self


class SourceTotals(Totals):
    languages: dict[str, NonNegativeInt] = Field(default_factory=dict)
    declared_languages: dict[str, LanguageTotals] = Field(
        default_factory=dict,
        description="mining runs: per declared language ('und' for none), records in, out and dropped per reason",
    )
    lengths: dict[str, SideLengths] = Field(
        default_factory=dict, description="per query language: query and passage lengths"
    )
    language_input: dict[str, NonNegativeInt] = Field(
        default_factory=dict,
        description="mining runs: rows reaching language ID with this language on either side, each row once per "
        "language (a kept row under the languages it was given, a dropped one under its declared ones, 'und' for "
        "none); ``languages`` counts the written rows alike",
    )
    lid_scores: LidScores | None = Field(default=None, description="mining runs: the kept pairs' language-ID scores")
    sampling_weight: float = Field(
        ge=0, le=1, description="share of training batches: output^alpha / sum over sources"
    )
    instructions: NonNegativeInt | None = Field(
        default=None, description="instruction runs: distinct instructions among the output rows"
    )
    consistency_ranks: dict[str, dict[str, NonNegativeInt]] = Field(
        default_factory=dict,
        description="consistency-filtered runs: per query language, pairs (kept and dropped) per rank bin",
    )

    skipped_negatives: dict[str, NonNegativeInt] = Field(
        default_factory=dict,
        description="hardnegatives runs: per reason, candidates inside the rank window skipped as likely false"
        " negatives; candidates, not records, so outside input = output + dropped + dead_letter",
    )

    @model_validator(mode="after")
    def _every_record_has_a_language(self):
        if self.declared_languages:
            counted = sum(lang.input for lang in self.declared_languages.values())
            if counted != self.input - self.dead_letter:
                raise ValueError(
                    f"declared_languages count {counted} records, not input {self.input} - dead_letter {self.dead_letter}"
                )
        return self

    @model_validator(mode="after")
    def _written_languages_reached_language_id(self):
        if self.language_input:
            for lang, rows in self.languages.items():
                if rows > self.language_input.get(lang, 0):
                    raise ValueError(
                        f"languages.{lang} {rows} > language_input.{lang} {self.language_input.get(lang, 0)}"
                    )
        return self

    @field_validator("consistency_ranks")
    @classmethod
    def _every_rank_bin(cls, ranks: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
        for lang, histogram in ranks.items():
            if set(histogram) != set(RANK_BIN_LABELS):
                raise ValueError(f"{lang}: a rank histogram has every bin from '1' to 'beyond' and no other")
        return ranks


class Parent(_Strict):
    """The finished run a derived run (consistency, hardnegatives) read: where, and the sha256 of its manifest's bytes."""

    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class ModelUsage(_Strict):
    """What one model's responses in a generation run cost: responses received (retries that failed aside,
    cached ones not counted: they cost nothing again), their tokens as the endpoint's ``usage`` reported."""

    requests: NonNegativeInt = 0
    prompt_tokens: NonNegativeInt = 0
    completion_tokens: NonNegativeInt = 0
    cost: float | None = Field(default=None, ge=0, description="US dollars; none when the model has no price")


class GenerationFile(_Strict):
    """A JSON-lines file of generations, the format ``--source synthetic=...`` reads."""

    path: str = Field(description="relative to the output directory")
    task_type: str
    rows: int = Field(ge=0)
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @field_validator("path")
    @classmethod
    def _inside_the_directory(cls, path: str) -> str:
        return _relative_inside(path)


class Generation(_Strict):
    """A generation run's accounting: every prompt ends as a generation, a task list or a dead letter."""

    model: str
    base_url: str
    prompts: NonNegativeInt = Field(description="brainstorm and generation prompts of the run")
    brainstorm_prompts: NonNegativeInt = 0
    cached: NonNegativeInt = Field(description="prompts answered from the response cache, without a request")
    sent: NonNegativeInt = Field(description="prompts sent to the endpoint")
    requests: NonNegativeInt = Field(description="HTTP requests, retries included")
    generations: NonNegativeInt = Field(description="lines written under generations/")
    task_lists: NonNegativeInt = Field(description="brainstorm responses parsed into tasks")
    tasks: dict[str, NonNegativeInt] = Field(
        default_factory=dict, description="per task type: distinct tasks after deduplication"
    )
    failed: dict[str, NonNegativeInt] = Field(default_factory=dict, description="dead-lettered prompts per reason")
    usage: dict[str, ModelUsage] = Field(default_factory=dict, description="per model the responses name")
    prompt_tokens: NonNegativeInt = 0
    completion_tokens: NonNegativeInt = 0
    cost: float | None = Field(default=None, ge=0, description="US dollars, all models; none when unpriced")
    price_per_1k: tuple[float, float] | None = Field(default=None, description="(input, output) US dollars")
    files: list[GenerationFile] = Field(default_factory=list)

    @model_validator(mode="after")
    def _conserved(self):
        problems = []
        failed = sum(self.failed.values())
        if self.prompts != self.generations + self.task_lists + failed:
            problems.append(f"prompts {self.prompts} != generations {self.generations} + task_lists "
                            f"{self.task_lists} + failed {failed}")
        if self.cached + self.sent > self.prompts:
            problems.append(f"cached {self.cached} + sent {self.sent} > prompts {self.prompts}")
        if self.requests < self.sent:
            problems.append(f"requests {self.requests} < sent {self.sent}")
        if sum(file.rows for file in self.files) != self.generations:
            problems.append(f"generations {self.generations} != rows in its files")
        for field in ("prompt_tokens", "completion_tokens"):
            if getattr(self, field) != sum(getattr(usage, field) for usage in self.usage.values()):
                problems.append(f"{field} {getattr(self, field)} != summed over the models")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class Teacher(_Strict):
    """The cross-encoder whose logits a teacher run (``--pipeline teacher``) wrote as ``teacher_scores``."""

    model: str = Field(description="--model as given")
    name: str = Field(description="the hub id, the checkpoint directory's name, or MODULE:CALLABLE")
    revision: str | None = Field(default=None, description="a hub model's commit")
    weights_sha256: str = Field(
        description="sha256 over the checkpoint's safetensors files (relative name and bytes, in name order); "
        "for a python: callable, over its module's source file"
    )
    hashed_files: list[str]


class Manifest(_Strict):
    schema_version: int = SCHEMA_VERSION
    pipeline: str
    created: str
    options: dict
    schema_: dict[str, str] = Field(alias="schema")
    shards: list[Shard]
    totals: Totals
    sources: dict[str, SourceTotals]
    parent: Parent | None = Field(default=None, description="the run this one filtered, if any")
    generation: Generation | None = Field(default=None, description="a generation run's prompts, responses and cost")
    teacher: Teacher | None = Field(default=None, description="a teacher run's cross-encoder")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("created")
    @classmethod
    def _timestamp(cls, created: str) -> str:
        try:
            moment = datetime.datetime.fromisoformat(created)
        except ValueError:
            moment = None
        if moment is None or moment.tzinfo is None:
            raise ValueError(f"{created!r} is not an ISO 8601 time with its UTC offset")
        return created

    @model_validator(mode="after")
    def _consistent(self):
        """Every count the manifest states twice agrees: shards with their source, sources with the totals."""
        problems = self._shard_problems() + self._total_problems() + self._weight_problems()
        if problems:
            more = len(problems) - _PROBLEMS_SHOWN
            raise ValueError("; ".join(problems[:_PROBLEMS_SHOWN]) + (f"; and {more} more" if more > 0 else ""))
        return self

    def _shard_problems(self) -> list[str]:
        problems = []
        first_listed: dict[str, int] = {}
        rows = Counter()
        languages: dict[str, Counter] = {name: Counter() for name in self.sources}
        for index, shard in enumerate(self.shards):
            # One file under two spellings is still one file: the trainer would read it twice.
            same_file = first_listed.setdefault(posixpath.normpath(shard.path), index)
            if same_file != index:
                problems.append(f"shards.{index}.path {shard.path!r} is listed twice (also shards.{same_file}.path)")
            if shard.source not in self.sources:
                problems.append(f"shards.{index}.source {shard.source!r} is not among the sources")
                continue
            rows[shard.source] += shard.rows
            languages[shard.source].update(shard.languages)
            problems += [f"shards.{index}: {problem}" for problem in shard.pair_problems()]
        for name, source in self.sources.items():
            if source.output != rows[name]:
                problems.append(f"sources.{name}.output {source.output} != {rows[name]} rows in its shards")
            for lang in sorted(set(source.languages) | set(languages[name])):
                stated = source.languages.get(lang, 0)
                if stated != languages[name][lang]:
                    problems.append(
                        f"sources.{name}.languages.{lang} {stated} != {languages[name][lang]} summed over its shards"
                    )
        return problems

    def _total_problems(self) -> list[str]:
        problems = []
        for field in ("input", "output", "dead_letter"):
            stated = getattr(self.totals, field)
            summed = sum(getattr(source, field) for source in self.sources.values())
            if stated != summed:
                problems.append(f"totals.{field} {stated} != {summed} summed over the sources")
        reasons = set(self.totals.dropped).union(*(source.dropped for source in self.sources.values()))
        for reason in sorted(reasons):
            stated = self.totals.dropped.get(reason, 0)
            summed = sum(source.dropped.get(reason, 0) for source in self.sources.values())
            if stated != summed:
                problems.append(f"totals.dropped.{reason} {stated} != {summed} summed over the sources")
        return problems

    def _weight_problems(self) -> list[str]:
        problems = [
            f"sources.{name}.sampling_weight is 0 but the source has {source.output} rows"
            for name, source in self.sources.items()
            if source.output and not source.sampling_weight
        ]
        # All zero only when there is nothing to sample; a split part with no rows keeps its parent's weights.
        total = math.fsum(source.sampling_weight for source in self.sources.values())
        if not math.isclose(total, 1.0, abs_tol=1e-9) and (total or self.totals.output):
            problems.append(f"sources.*.sampling_weight sum to {total}, not 1")
        return problems

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2) + "\n"


class ManifestError(ValueError):
    """A manifest that cannot be read, in one line naming what is wrong."""


def parse_manifest(text: str | bytes, where: str = MANIFEST_NAME) -> Manifest:
    """The manifest in ``text``; ManifestError naming the field (or the JSON position) otherwise."""
    try:
        raw = pydantic.TypeAdapter(dict).validate_json(text)
    except pydantic.ValidationError as error:
        problem = error.errors()[0]
        raise ManifestError(f"{where} is not a JSON object (truncated?): {problem['msg']}") from None
    version = raw.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ManifestError(
            f"{where}: schema_version {version!r} is not readable here (this version reads {SCHEMA_VERSION})"
        )
    try:
        return Manifest.model_validate(raw)
    except pydantic.ValidationError as error:
        raise ManifestError(f"{where}: {_one_line(error)}") from None


def _one_line(error: pydantic.ValidationError) -> str:
    """The first few problems in one line, each after the field it is in (the cross-checks name their own)."""
    problems = []
    for problem in error.errors()[:_PROBLEMS_SHOWN]:
        message = problem["msg"].removeprefix("Value error, ")
        place = ".".join(str(part) for part in problem["loc"])
        problems.append(f"{place}: {message}" if place else message)
    return "; ".join(problems)
