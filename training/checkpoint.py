"""Checkpoint directories: a Hugging Face / sentence-transformers model at the
top, the state ``--resume`` needs under ``training_state/``.

``training_state/latest`` names the newest complete state. A state directory
is renamed into place only after every rank wrote its part, and ``latest`` is
replaced atomically after that, so a run killed at any moment resumes from the
last complete state. The state holds its own copy of the weights, so the
exported model at the top may run ahead of it without harm.
"""

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import safetensors.torch
import torch

from training.distributed import Context, barrier
from training.encoder import Encoder

STATE_DIR = "training_state"
METRICS = "metrics.jsonl"
_LATEST = "latest"
_WEIGHTS = "model.safetensors"
_OPTIMIZER = "optimizer.pt"
_RUN = "run.json"


@dataclass(frozen=True)
class StoredRun:
    directory: Path
    step: int
    world_size: int
    config: dict
    data: dict


def stored_run(output: Path) -> StoredRun | None:
    pointer = output / STATE_DIR / _LATEST
    if not pointer.exists():
        return None
    directory = output / STATE_DIR / pointer.read_text(encoding="utf-8").strip()
    run = json.loads((directory / _RUN).read_text(encoding="utf-8"))
    return StoredRun(directory, run["step"], run["world_size"], run["config"], run["data"])


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
    states = output / STATE_DIR
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
        shutil.rmtree(states / name, ignore_errors=True)
        os.replace(partial, states / name)
        _write_atomically(states / _LATEST, name)
        for earlier in states.glob("step-*"):
            if earlier.name != name:
                shutil.rmtree(earlier)
    barrier()


def restore_state(run: StoredRun, context: Context, *, encoder: Encoder, optimizer, scheduler) -> None:
    if run.world_size != context.world_size:
        raise ValueError(
            f"the stored run had {run.world_size} process(es), this one has {context.world_size}:"
            " each rank's random state is stored separately"
        )
    safetensors.torch.load_model(encoder.model, str(run.directory / _WEIGHTS), device=str(context.device))
    # Our own files, but loaded as plain tensors all the same: no code runs on load.
    stored = torch.load(run.directory / _OPTIMIZER, map_location=context.device, weights_only=True)
    optimizer.load_state_dict(stored["optimizer"])
    scheduler.load_state_dict(stored["scheduler"])
    rng = torch.load(_rng_file(run.directory, context.rank), map_location="cpu", weights_only=True)
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng:
        torch.cuda.set_rng_state(rng["cuda"], context.device)


def export(encoder: Encoder, output: Path) -> None:
    """The model files at the top of ``output``, each replaced atomically."""
    staging = output / ".export.partial"
    shutil.rmtree(staging, ignore_errors=True)
    encoder.save_pretrained(staging)
    for path in sorted(staging.rglob("*")):
        target = output / path.relative_to(staging)
        if path.is_dir():
            target.mkdir(exist_ok=True)
        else:
            os.replace(path, target)
    shutil.rmtree(staging)


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
