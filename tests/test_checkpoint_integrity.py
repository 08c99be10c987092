"""A damaged training state is refused on --resume, in one line naming the file, instead of resumed from."""

import shutil
from pathlib import Path

import pytest

from tests.training_fixtures import one_thread, pair_rows, write_mined_output
from training.checkpoint import STATE_DIR, stored_run
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
             "--max-query-length", "16", "--max-passage-length", "16", "--num-workers", "0", "--no-progress"]
        )  # fmt: skip
    return {"data": Path(data), "output": output}


def resume(output: Path) -> None:
    with one_thread():
        main(["pretrain", "--output", str(output), "--resume", "--max-steps", "3", "--no-progress"])


def test_an_undamaged_copy_resumes(saved, tmp_path):
    copy = shutil.copytree(saved["output"], tmp_path / "ckpt")
    resume(copy)
    assert stored_run(copy).step == 3


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("name", STATE_FILES + ["latest"])
def test_a_damaged_file_is_refused_by_name(saved, tmp_path, name, damage):
    copy = shutil.copytree(saved["output"], tmp_path / "ckpt")
    states = copy / STATE_DIR
    path = states / name if name == "latest" else states / "step-00000002" / name
    DAMAGES[damage](path)
    with pytest.raises(SystemExit) as refused:
        resume(copy)
    message = str(refused.value.code)
    assert message.startswith("pretrain: ") and "\n" not in message
    assert str(path) in message
    if name not in ("files.json", "latest"):  # damage to the record or the pointer shows as a mismatch between them
        assert EXPECTED[damage] in message
