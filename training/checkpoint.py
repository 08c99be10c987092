"""Checkpoint directories: a Hugging Face / sentence-transformers model in
``--output`` (the folder a user uploads or loads with ``SentenceTransformer``),
the state ``--resume`` needs beside it, in ``OUTPUT.training_state/``.

``OUTPUT.training_state/latest`` names the newest complete state and the sha256
of its ``files.json``, which records the size and sha256 of every other file of
the state. A state directory is renamed into place only after every rank wrote
its part and the record was written, and ``latest`` is replaced atomically
after that, so a run killed at any moment resumes from the last complete state.
``--resume`` checks every file against the record before reading any, so a
damaged state is refused instead of resumed from. The state holds its own copy
of the weights, so the exported model may run ahead of it without harm.
Earlier versions kept the state in ``OUTPUT/training_state/``: it is resumed
from, and removed once the first state beside the model is complete.
"""

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pydantic
import safetensors.torch
import torch

from mining import run_store
from training.distributed import Context, barrier
from training.encoder import Encoder

# The state's folder: ``OUTPUT`` + this, beside the model; an earlier version's inside it, as ``OUTPUT/training_state``.
STATE_SUFFIX = ".training_state"
_LEGACY_STATE_DIR = "training_state"
METRICS = "metrics.jsonl"
_LATEST = "latest"
_WEIGHTS = "model.safetensors"
_OPTIMIZER = "optimizer.pt"
_RUN = "run.json"
_RECORD = "files.json"


class CheckpointError(ValueError):
    """A stored training state that cannot be resumed from, in one line naming the file."""


class _StoredFile(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    bytes: int
    sha256: str


_RECORD_FORMAT = pydantic.TypeAdapter(dict[str, _StoredFile])


def _sha256(path: Path) -> str:
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


@dataclass(frozen=True)
class StoredRun:
    directory: Path
    step: int
    world_size: int
    config: dict
    data: dict


def state_dir(output: Path) -> Path:
    """Where the training state of the checkpoint ``output`` is kept: beside it, out of the folder a user uploads
    (it holds the weights again and the optimizer's two moments: three times the model's size)."""
    output = output.resolve()
    return output.with_name(output.name + STATE_SUFFIX)


def _states_to_resume(output: Path) -> Path:
    states, legacy = state_dir(output), output / _LEGACY_STATE_DIR
    return legacy if legacy.is_dir() and not states.exists() else states


def stored_run(output: Path) -> StoredRun | None:
    """The state ``latest`` names, every file checked against its record; None if there is none."""
    states = _states_to_resume(output)
    pointer = states / _LATEST
    if not pointer.exists():
        saved = sorted(path.name for path in states.glob("step-*"))
        if saved:
            raise CheckpointError(f"{pointer} is missing, though {states} holds {', '.join(saved)}")
        return None  # not even the first state was saved whole
    try:
        name, record_sha256 = pointer.read_text(encoding="utf-8").split()
    except (OSError, UnicodeDecodeError, ValueError):
        raise CheckpointError(f"{pointer} is corrupt: it should hold a state's name and its record's sha256") from None
    directory = states / name
    if not re.fullmatch(r"step-\d{8,}", name) or not directory.is_dir():
        raise CheckpointError(f"{pointer} names {name!r}, but there is no such state in {states}")
    _check_files(directory, pointer, record_sha256)
    try:
        run = json.loads((directory / _RUN).read_text(encoding="utf-8"))
        return StoredRun(directory, run["step"], run["world_size"], run["config"], run["data"])
    except (ValueError, KeyError, TypeError) as error:  # its bytes are the saved ones: another version wrote it
        raise CheckpointError(f"{directory / _RUN} is not a run this version reads: {error!r}") from None


def _check_files(directory: Path, pointer: Path, record_sha256: str) -> None:
    record = directory / _RECORD
    if not record.is_file():
        raise CheckpointError(f"{record} is missing: the files of this state cannot be checked")
    if _sha256(record) != record_sha256:
        raise CheckpointError(f"{record} does not have the sha256 {pointer} recorded: one of them is corrupt")
    try:
        files = _RECORD_FORMAT.validate_json(record.read_bytes())
    except pydantic.ValidationError as error:
        raise CheckpointError(f"{record} is corrupt: {error.errors()[0]['msg']}") from None
    for name, stored in sorted(files.items()):
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"{path} is missing")
        size = path.stat().st_size
        _check(path, stored, size)  # before hashing: a file of another size is not worth reading
        _check(path, stored, size, _sha256(path))


_AS_SAVED = run_store.ProblemWording(
    truncated="{name} is truncated: {found} bytes, {recorded} when it was saved",
    size="{name} is {found} bytes, {recorded} when it was saved",
    sha256="{name} is corrupt: its sha256 differs from the one recorded when it was saved",
)


def _check(path: Path, stored: _StoredFile, size: int, sha256: str | None = None) -> None:
    problems = run_store.file_problems(str(path), size, sha256, stored, _AS_SAVED)
    if problems:
        raise CheckpointError(problems[0])


def _write_record(directory: Path) -> str:
    """Records every file of ``directory``; returns the record's sha256."""
    files = {path.name: {"bytes": path.stat().st_size, "sha256": _sha256(path)} for path in sorted(directory.iterdir())}
    record = directory / _RECORD
    record.write_text(json.dumps(files, indent=2) + "\n", encoding="utf-8")
    return _sha256(record)


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def _rng_file(directory: Path, rank: int) -> Path:
    return directory / f"rng-rank{rank}.pt"


def save_state(
    output: Path, context: Context, *, step: int, config: dict, data: dict, encoder: Encoder, optimizer, scheduler
) -> None:
    """Every rank calls this together: each writes its random state, the first rank the rest."""
    states = state_dir(output)
    name = f"step-{step:08d}"
    partial = states / f".{name}.partial"
    if context.is_main:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    barrier()
    rng = {"cpu": torch.get_rng_state()}
    if context.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(context.device)
    torch.save(rng, _rng_file(partial, context.rank))
    if context.is_main:
        safetensors.torch.save_model(encoder.model, str(partial / _WEIGHTS))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, partial / _OPTIMIZER)
        run = {"step": step, "world_size": context.world_size, "config": config, "data": data}
        (partial / _RUN).write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")
    barrier()
    if context.is_main:
        record_sha256 = _write_record(partial)
        shutil.rmtree(states / name, ignore_errors=True)
        os.replace(partial, states / name)
        _write_atomically(states / _LATEST, f"{name} {record_sha256}\n")
        for earlier in states.glob("step-*"):
            if earlier.name != name:
                shutil.rmtree(earlier)
        shutil.rmtree(output / _LEGACY_STATE_DIR, ignore_errors=True)  # the state it was resumed from is superseded
    barrier()


def restore_state(run: StoredRun, context: Context, *, encoder: Encoder, optimizer, scheduler) -> None:
    if run.world_size != context.world_size:
        raise ValueError(
            f"the stored run had {run.world_size} process(es), this one has {context.world_size}:"
            " each rank's random state is stored separately"
        )
    safetensors.torch.load_model(encoder.model, str(run.directory / _WEIGHTS), device=str(context.device))
    # Checked against their record, and loaded as plain tensors all the same: no code runs on load.
    stored = torch.load(run.directory / _OPTIMIZER, map_location=context.device, weights_only=True)
    optimizer.load_state_dict(stored["optimizer"])
    scheduler.load_state_dict(stored["scheduler"])
    rng = torch.load(_rng_file(run.directory, context.rank), map_location="cpu", weights_only=True)
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng:
        torch.cuda.set_rng_state(rng["cuda"], context.device)


MODEL_CARD = "README.md"


def export(encoder: Encoder, output: Path, card: str | None = None) -> None:
    """The model files at the top of ``output`` (and ``card`` as its README.md), each replaced atomically."""
    staging = output / ".export.partial"
    shutil.rmtree(staging, ignore_errors=True)
    encoder.save_pretrained(staging)
    if card is not None:
        (staging / MODEL_CARD).write_text(card, encoding="utf-8")
    for path in sorted(staging.rglob("*")):
        target = output / path.relative_to(staging)
        if path.is_dir():
            target.mkdir(exist_ok=True)
        else:
            os.replace(path, target)
    shutil.rmtree(staging)


def model_card(
    config: dict, step: int, data_manifests: dict[str, str], source_rows: dict[str, int], encoder: Encoder,
    metrics: list[dict],
) -> str:
    """A sentence-transformers-style README.md: how to load the model with its prompts, the data it was trained on
    (each --data manifest's sha256, rows per source), the options, the last training metrics and evaluation."""
    trained = [record for record in metrics if "loss" in record]
    distilled = sum(record.get("distilled_rows", 0) for record in trained)
    evaluated = [record for record in metrics if "loss" not in record and len(record) > 1]
    prompts = encoder.prompts
    lines = [
        "---", "library_name: sentence-transformers", "pipeline_tag: sentence-similarity",
        "tags:", "- sentence-transformers", "- feature-extraction", "- embedmill", "---", "",
        f"# {Path(config['output']).name}", "",
        f"Trained with embedmill from `{config['model']}` for {step} steps of {config['batch_size']} pairs "
        f"(InfoNCE, temperature {config['temperature']}"
        + (f", up to {config['max_negatives']} hard negatives per row" if config["max_negatives"] else "")
        + (f", distilled from teacher scores with weight {config['distill_weight']}" if distilled else "") + "), "
        f"trained on queries of up to {config['max_query_length']} and passages of up to "
        f"{config['max_passage_length']} tokens; it encodes up to {encoder.max_length} (its `max_seq_length`: "
        + ("--export-max-length" if config.get("export_max_length") else "the length trained at, the larger of the two")
        + "). Its training state (`--resume`) is kept beside this folder, in "
        f"`{Path(config['output']).name}{STATE_SUFFIX}/`: upload this folder alone.", "",
        "```python", "from sentence_transformers import SentenceTransformer", "",
        f'model = SentenceTransformer("{Path(config["output"]).name}")',
        'queries = model.encode_query(["..."])      # prompt "query": ' + json.dumps(prompts.query),
        'passages = model.encode_document(["..."])  # prompt "document": ' + json.dumps(prompts.passage),
        "```", "", "## Training data", "", "| --data | manifest sha256 |", "|---|---|",
        *(f"| `{directory}` | `{digest}` |" for directory, digest in data_manifests.items()), "",
        "| source | rows |", "|---|---|", *(f"| {name} | {rows} |" for name, rows in source_rows.items()), "",
        "## Options", "", "```json", json.dumps(config, indent=2, sort_keys=True), "```", "",
    ]
    if trained:
        last = trained[-1]
        lines += ["## Training", "", f"Step {last['step']}: loss {last['loss']:.4f}, learning rate {last['lr']:.3g}.", ""]
    if evaluated:
        last = evaluated[-1]
        lines += ["## Evaluation", "", f"At step {last['step']}:", "", "| metric | value |", "|---|---|",
                  *(f"| {name} | {_figure(value)} |" for name, value in sorted(last.items()) if name != "step"), ""]
    return "\n".join(lines)


def _figure(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


class MetricsLog:
    """``metrics.jsonl``: one JSON object per line, each with its ``step``."""

    def __init__(self, output: Path):
        self.path = output / METRICS

    def append(self, record: dict) -> None:
        with self.path.open("a", encoding="utf-8") as stream:
            stream.write(json.dumps(record) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drops what a killed run logged after its last saved state, which the resumed run logs again."""
        if self.path.exists():
            lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
            _write_atomically(self.path, "".join(line for line in lines if json.loads(line)["step"] <= step))

    def records(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines()]
