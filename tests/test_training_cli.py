import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest
import torch
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer

from tests.training_fixtures import REPO, mine_samples, one_thread
from training.checkpoint import stored_run
from training.cli import main
from training.encoder import Encoder
from training.holdout import split_output
from training.trainer import PretrainConfig, pretrain


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("samples")
    mined = mine_samples(root / "mined")
    split_output(str(mined), str(root / "train"), str(root / "heldout"), fraction=0.2, seed=0)
    return {"mined": mined, "train": root / "train", "heldout": root / "heldout"}


def test_split_keeps_every_row_exactly_once(split):
    manifests = {
        part: json.loads((split[part] / "manifest.json").read_text()) for part in ("mined", "train", "heldout")
    }
    mined = manifests["mined"]["totals"]["output"]
    held_out = manifests["heldout"]["totals"]["output"]
    assert manifests["train"]["totals"] == {
        "input": mined,
        "output": mined - held_out,
        "dropped": {"held_out": held_out},
        "dead_letter": 0,
    }
    assert 0.1 * mined < held_out < 0.3 * mined
    assert set(manifests["heldout"]["sources"]) == set(manifests["mined"]["sources"]) == {"ccnews", "nllb", "sbert"}
    ids = {part: set() for part in ("mined", "train", "heldout")}
    for part, found in ids.items():
        for shard in manifests[part]["shards"]:
            with pa.ipc.open_stream(pa.memory_map(str(split[part] / shard["path"]))) as reader:
                found.update(reader.read_all().column("id").to_pylist())
    assert ids["train"] | ids["heldout"] == ids["mined"] and not ids["train"] & ids["heldout"]


def test_tiny_model_learns_on_the_mined_samples(split, tmp_path):
    output = tmp_path / "ckpt"
    config = PretrainConfig(
        data=[str(split["train"])],
        eval_data=[str(split["heldout"])],
        output=str(output),
        batch_size=32,
        max_steps=100,
        lr=5e-4,
        max_query_length=32,
        max_passage_length=64,
        num_workers=0,
        log_every=10,
        eval_every=50,
        eval_batch_size=32,
        progress=False,
    )
    logged = pretrain(config)
    losses = [record["loss"] for record in logged if "loss" in record]
    evaluations = [record for record in logged if "eval_accuracy" in record]
    assert [record["step"] for record in evaluations] == [0, 50, 100]
    assert sum(losses[-3:]) / 3 < 0.5 * losses[0], f"training loss did not fall: {losses}"
    first, last = evaluations[0], evaluations[-1]
    assert last["eval_accuracy"] > first["eval_accuracy"] + 0.05, evaluations
    assert last["eval_accuracy"] > 4 * last["eval_chance"], evaluations

    lines = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert lines == logged
    assert {"step", "loss", "lr", "grad_norm", "pairs_per_s"} <= set(lines[1])

    texts = ["Wie spät ist es?", "東京は日本の首都です。", "query: already prefixed"]
    model = SentenceTransformer(str(output), device="cpu")
    ours = Encoder.from_pretrained(output)
    for kind in ("query", "passage"):
        torch.testing.assert_close(
            model.encode(texts, prompt_name=kind, convert_to_tensor=True).cpu(),
            ours.encode(texts, kind),
            rtol=0,
            atol=1e-5,
        )


def train_command(data: Path, output: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "training", "pretrain", "--data", str(data), "--output", str(output),
        "--batch-size", "16", "--max-steps", "40", "--save-every", "5", "--lr", "1e-3", "--max-query-length", "24",
        "--max-passage-length", "32", "--num-workers", "1", "--seed", "5", "--log-every", "1", "--no-progress", *extra,
    ]  # fmt: skip


def run(command: list[str]) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=300)


def test_killed_run_resumes_to_bitwise_identical_weights(split, tmp_path):
    uninterrupted, interrupted = tmp_path / "uninterrupted", tmp_path / "interrupted"
    finished = run(train_command(split["train"], uninterrupted))
    assert finished.returncode == 0, finished.stderr

    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        train_command(split["train"], interrupted),
        cwd=REPO,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pointer = interrupted / "training_state" / "latest"
    while not pointer.exists() and process.poll() is None:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = stored_run(interrupted).step
    assert killed_at < 40, "the run ended before it could be killed"

    resumed = run(train_command(split["train"], interrupted, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert stored_run(interrupted).step == 40
    expected, actual = load_file(uninterrupted / "model.safetensors"), load_file(interrupted / "model.safetensors")
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), f"{name} differs after resuming from step {killed_at}"
    metrics = [json.loads(line) for line in (interrupted / "metrics.jsonl").read_text().splitlines()]
    assert [record["step"] for record in metrics] == list(range(1, 41)), "every step logged once"
    reference = [json.loads(line) for line in (uninterrupted / "metrics.jsonl").read_text().splitlines()]
    assert [record["loss"] for record in metrics] == [record["loss"] for record in reference]

    with pytest.raises(SystemExit, match=r"lr \(stored 0.001, given 0.1\)"):
        main(["pretrain", "--output", str(interrupted), "--resume", "--lr", "0.1"])
    with pytest.raises(SystemExit, match="is not empty: pass --resume"):
        main(train_command(split["train"], interrupted)[3:])
