"""``manifest.json``: what a pipeline run wrote, and how every input record ended."""

import posixpath

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEMA_VERSION = 1
# Length histograms: bin 0 counts empty texts, bin i texts of [2^(i-1), 2^i) characters.
LENGTH_BINS = 18
MANIFEST_NAME = "manifest.json"
SHARDS_DIR = "shards"
DEAD_LETTER_DIR = "dead_letter"
REJECTED_DIR = "rejected"
# Consistency ranks: bins 1, 2, 3-4, 5-8, ... up to 2^RANK_BINS_LOG2, then "beyond".
RANK_BINS_LOG2 = 16
RANK_BIN_LABELS = ("1", "2", *(f"{2 ** (i - 1) + 1}-{2 ** i}" for i in range(2, RANK_BINS_LOG2 + 1)), "beyond")


def rank_bin_label(rank: int) -> str:
    """The histogram bin of a rank >= 1: bin i holds (2^(i-1), 2^i]."""
    return RANK_BIN_LABELS[min((rank - 1).bit_length(), RANK_BINS_LOG2 + 1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LengthStats(_Strict):
    """Text lengths in characters: exact count and sum, power-of-two histogram."""

    count: int = 0
    sum: int = 0
    histogram: list[int] = Field(default_factory=lambda: [0] * LENGTH_BINS)

    @field_validator("histogram")
    @classmethod
    def _bins(cls, histogram: list[int]) -> list[int]:
        if len(histogram) != LENGTH_BINS:
            raise ValueError(f"a length histogram has {LENGTH_BINS} bins, not {len(histogram)}")
        return histogram

    def add(self, length: int) -> None:
        self.count += 1
        self.sum += length
        self.histogram[min(length.bit_length(), LENGTH_BINS - 1)] += 1

    def merge(self, other: "LengthStats") -> None:
        self.count += other.count
        self.sum += other.sum
        self.histogram = [a + b for a, b in zip(self.histogram, other.histogram, strict=True)]


class SideLengths(_Strict):
    query: LengthStats = Field(default_factory=LengthStats)
    passage: LengthStats = Field(default_factory=LengthStats)

    def merge(self, other: "SideLengths") -> None:
        self.query.merge(other.query)
        self.passage.merge(other.passage)


class Shard(_Strict):
    path: str = Field(description="relative to the output directory")
    rows: int = Field(ge=0)
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    source: str
    languages: dict[str, int] = Field(
        description="rows with this language on either side"
    )

    @field_validator("path")
    @classmethod
    def _inside_the_directory(cls, path: str) -> str:
        """A manifest never points a reader outside its own directory."""
        normalised = posixpath.normpath(path)
        if "://" in path or path.startswith(("/", "\\")) or normalised.startswith(".."):
            raise ValueError(f"shard path {path!r} must be relative and inside the output directory")
        return path


class Totals(_Strict):
    """Record accounting: input == output + sum(dropped) + dead_letter."""

    input: int = 0
    output: int = 0
    dropped: dict[str, int] = Field(default_factory=dict)
    dead_letter: int = 0

    @model_validator(mode="after")
    def _conserved(self):
        accounted = self.output + sum(self.dropped.values()) + self.dead_letter
        if accounted != self.input:
            raise ValueError(
                f"records not conserved: input {self.input} != output {self.output}"
                f" + dropped {sum(self.dropped.values())} + dead_letter {self.dead_letter}"
            )
        return self


class SourceTotals(Totals):
    languages: dict[str, int] = Field(default_factory=dict)
    lengths: dict[str, SideLengths] = Field(
        default_factory=dict, description="per query language: query and passage lengths"
    )
    sampling_weight: float = Field(
        ge=0, le=1, description="share of training batches: output^alpha / sum over sources"
    )
    instructions: int | None = Field(
        default=None, description="instruction runs: distinct instructions among the output rows"
    )
    consistency_ranks: dict[str, dict[str, int]] = Field(
        default_factory=dict,
        description="consistency-filtered runs: per query language, pairs (kept and dropped) per rank bin",
    )


class Parent(_Strict):
    """The finished run a derived run (consistency, hardnegatives) read: where, and the sha256 of its manifest's bytes."""

    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


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

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

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
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc']) or '(top level)'}: {problem['msg']}"
            for problem in error.errors()[:5]
        )
        raise ManifestError(f"{where}: {problems}") from None
