"""A damaged training state is refused on --resume, in one line naming the file, instead of resumed from; the state is
kept beside the exported model, whose folder holds only what a user uploads."""

import shutil
from pathlib import Path

import pytest
from sentence_transformers import SentenceTransformer

from tests.training_fixtures import one_thread, pair_rows, write_mined_output
from training.checkpoint import MODEL_CARD, state_dir, stored_run
from training.cli import main

STATE_FILES = ["model.safetensors", "optimizer.pt", "run.json", "rng-rank0.pt", "files.json"]


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGES = {"flipped byte": _flip_a_byte, "truncated": _truncate, "deleted": Path.unlink}
EXPECTED = {"flipped byte": "corrupt", "truncated": "truncated", "deleted": "missing"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("integrity")
    data = write_mined_output(str(root / "mined"), {"alpha": pair_rows("alpha", 24), "beta": pair_rows("beta", 16)})
    output = root / "ckpt"
    with one_thread():
        main(
            ["pretrain", "--data", data, "--output", str(output), "--batch-size", "8", "--max-steps", "2",
             "--max-query-length", "16", "--max-passage-length", "24", "--num-workers", "0", "--no-progress"]
        )  # fmt: skip
    return {"data": Path(data), "output": output}


def resume(output: Path, *extra: str) -> None:
    with one_thread():
        main(["pretrain", "--output", str(output), "--resume", "--max-steps", "3", "--no-progress", *extra])


def copied(saved, tmp_path) -> Path:
    """A copy of the checkpoint and of its state beside it."""
    copy = shutil.copytree(saved["output"], tmp_path / "ckpt")
    shutil.copytree(state_dir(saved["output"]), state_dir(copy))
    return copy


def test_an_undamaged_copy_resumes(saved, tmp_path):
    copy = copied(saved, tmp_path)
    resume(copy)
    assert stored_run(copy).step == 3


def test_the_model_folder_holds_no_training_state_and_the_trained_length(saved):
    output = saved["output"]
    assert (state_dir(output) / "latest").is_file() and state_dir(output).parent == output.parent
    assert not [path.name for path in output.iterdir() if "state" in path.name or path.suffix == ".pt"]
    # The longer of --max-query-length 16 and --max-passage-length 24, not the tiny model's 512 positions.
    assert SentenceTransformer(str(output), device="cpu").max_seq_length == 24
    assert "encodes up to 24 (its `max_seq_length`: the length trained at" in (output / MODEL_CARD).read_text()


def test_a_state_of_the_older_layout_resumes_and_moves_beside_the_model(saved, tmp_path):
    copy = shutil.copytree(saved["output"], tmp_path / "ckpt")
    older = shutil.copytree(state_dir(saved["output"]), copy / "training_state")
    resume(copy, "--export-max-length", "20")
    assert stored_run(copy).step == 3 and (state_dir(copy) / "latest").is_file()
    assert not older.exists(), "the older state is removed once the new one is complete"
    assert SentenceTransformer(str(copy), device="cpu").max_seq_length == 20
    assert "encodes up to 20 (its `max_seq_length`: --export-max-length)" in (copy / MODEL_CARD).read_text()


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("name", STATE_FILES + ["latest"])
def test_a_damaged_file_is_refused_by_name(saved, tmp_path, name, damage):
    copy = copied(saved, tmp_path)
    states = state_dir(copy)
    path = states / name if name == "latest" else states / "step-00000002" / name
    DAMAGES[damage](path)
    with pytest.raises(SystemExit) as refused:
        resume(copy)
    message = str(refused.value.code)
    assert message.startswith("pretrain: ") and "\n" not in message
    assert str(path) in message
    if name not in ("files.json", "latest"):  # damage to the record or the pointer shows as a mismatch between them
        assert EXPECTED[damage] in message
