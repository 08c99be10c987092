"""``manifest.json``: what a pipeline run wrote, and how every input record ended."""

from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
SHARDS_DIR = "shards"
DEAD_LETTER_DIR = "dead_letter"
REJECTED_DIR = "rejected"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Shard(_Strict):
    path: str = Field(description="relative to the output directory")
    rows: int = Field(ge=0)
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    source: str
    languages: dict[str, int] = Field(
        description="rows with this language on either side"
    )


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
    sampling_weight: float = Field(
        ge=0, le=1, description="share of training batches: output^alpha / sum over sources"
    )


class Manifest(_Strict):
    schema_version: int = SCHEMA_VERSION
    pipeline: str
    created: str
    options: dict
    schema_: dict[str, str] = Field(alias="schema")
    shards: list[Shard]
    totals: Totals
    sources: dict[str, SourceTotals]

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2) + "\n"
