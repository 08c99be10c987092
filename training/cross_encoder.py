"""The teacher of ``--pipeline teacher``: a cross-encoder scoring (query, passage) pairs, named by a spec as
``schemas.encoder_spec`` parses it:

- a sentence-transformers ``CrossEncoder`` checkpoint, by local path (``st:PATH`` too, as for encoders) or Hugging
  Face hub id; its weights load from safetensors only;
- ``python:MODULE:CALLABLE``: a callable ``(queries, passages) -> one score per pair`` (another engine, an API).

Teacher scores are logits (no sigmoid), what distillation's softmax over a row's group expects; the
false-negative filters of ``hardnegatives`` take the model's own activation (a sigmoid for one label), as
sentence-transformers' ``mine_hard_negatives`` does, so that ``--max-score`` and ``--relative-margin`` read as
probabilities.
"""

import hashlib
import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np

from schemas.encoder_spec import EncoderSpec
from schemas.manifest import Teacher

Scorer = Callable[[list[str], list[str]], np.ndarray]
_HASH_CHUNK = 1 << 20


def _files_sha256(directory: Path, files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(directory).as_posix().encode("utf-8") + b"\0")
        with path.open("rb") as stream:
            while chunk := stream.read(_HASH_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def _hub_snapshot(repo_id: str) -> tuple[Path, str]:
    """The local snapshot of a hub model (from the cache, else downloaded) and its commit."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        try:
            path = Path(snapshot_download(repo_id, local_files_only=True))
        except FileNotFoundError:
            path = Path(snapshot_download(repo_id))
    except HFValidationError:
        raise ValueError("no such file or directory, nor a Hugging Face hub id") from None
    except Exception as error:  # noqa: BLE001  offline, unknown repository, no access: one line for all
        raise ValueError(f"not a local checkpoint, and the hub has none to give ({type(error).__name__})") from None
    return path, path.name


def teacher_identity(text: str) -> Teacher:
    """What the manifest records of the teacher, computed before any work: its name, and a hash of its weights
    (of a python: callable, of its module's source). ValueError where there are no safetensors weights."""
    spec = EncoderSpec.parse(text)
    if spec.module is not None:
        if not callable(getattr(importlib.import_module(spec.module), spec.callable_name, None)):
            raise ValueError(f"module {spec.module} has no callable {spec.callable_name}")
        origin = importlib.util.find_spec(spec.module).origin
        if origin is None or not Path(origin).is_file():
            raise ValueError(f"module {spec.module} has no source file to hash")
        source = Path(origin)
        return Teacher(
            model=text, name=f"{spec.module}:{spec.callable_name}",
            weights_sha256=_files_sha256(source.parent, [source]), hashed_files=[source.name],
        )
    local = Path(spec.path).expanduser()
    revision = None
    if local.is_dir():
        directory, name = local, local.resolve().name
    elif spec.names_a_file:
        raise ValueError("a teacher checkpoint is a directory")
    else:
        (directory, revision), name = _hub_snapshot(spec.path), spec.path
    weights = sorted(directory.rglob("*.safetensors"))
    if not weights:
        raise ValueError(f"{directory} holds no *.safetensors weights (pickled weights are not loaded)")
    return Teacher(
        model=text, name=name, revision=revision, weights_sha256=_files_sha256(directory, weights),
        hashed_files=[path.relative_to(directory).as_posix() for path in weights],
    )


def load_cross_encoder(teacher: Teacher, device: str | None, batch_size: int, logits: bool = True) -> Scorer:
    """The scorer ``teacher`` (``teacher_identity``'s) names: the same revision of a hub model. ``logits``: no
    activation; else the checkpoint's own (a python: callable's scores are what it returns either way)."""
    spec = EncoderSpec.parse(teacher.model)
    if spec.module is not None:
        return getattr(importlib.import_module(spec.module), spec.callable_name)
    import torch
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(
        str(Path(spec.path).expanduser()), device=device, revision=teacher.revision,
        model_kwargs={"use_safetensors": True},
    )

    def score(queries: list[str], passages: list[str]) -> np.ndarray:
        return model.predict(
            list(zip(queries, passages, strict=True)), batch_size=batch_size,
            activation_fn=torch.nn.Identity() if logits else None,
            convert_to_numpy=True, show_progress_bar=False,
        )

    return score
