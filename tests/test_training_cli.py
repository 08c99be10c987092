import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import fsspec
import pyarrow as pa
import pytest
import torch
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer

from mining import run_store
from schemas.manifest import rank_bin_label
from schemas.pairs import INSTRUCT_SCHEMA, with_consistency_rank
from tests.training_fixtures import REPO, mine_samples, one_thread, pair_rows, tiny_encoder, write_mined_output
from training.checkpoint import state_dir, stored_run
from training.cli import main
from training.encoder import Encoder
from training.holdout import split_output
from training.shard_store import STORAGE, read_manifest
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


def _part_rows(directory: Path, manifest: dict) -> list[dict]:
    rows = []
    for shard in manifest["shards"]:
        with pa.ipc.open_stream(pa.memory_map(str(directory / shard["path"]))) as reader:
            rows += reader.read_all().to_pylist()
    return rows


def test_each_split_part_reports_the_lengths_of_its_own_rows(split):
    for part in ("train", "heldout"):
        manifest = json.loads((split[part] / "manifest.json").read_text())
        rows = _part_rows(split[part], manifest)
        for name, source in manifest["sources"].items():
            mine = [row for row in rows if row["source"] == name]
            for side in ("query", "passage"):
                stats = [sides[side] for sides in source["lengths"].values()]
                assert sum(stat["count"] for stat in stats) == len(mine) == source["output"], (part, name)
                assert sum(stat["sum"] for stat in stats) == sum(len(row[side]) for row in mine), (part, name)


def test_each_split_part_counts_the_instructions_and_consistency_ranks_of_its_own_rows(tmp_path):
    rows = [
        {**row, "task": "find the answer", "task_type": "short-long", "instruction": f"instruction {i % 7}",
         "consistency_rank": 1 + i % 40}
        for i, row in enumerate(pair_rows("alpha", 60))
    ]
    mined = write_mined_output(str(tmp_path / "mined"), {"alpha": rows}, schema=with_consistency_rank(INSTRUCT_SCHEMA))
    split_output(mined, str(tmp_path / "train"), str(tmp_path / "heldout"), fraction=0.1, seed=3)
    for part in ("train", "heldout"):
        manifest = json.loads((tmp_path / part / "manifest.json").read_text())
        part_rows = _part_rows(tmp_path / part, manifest)
        source = manifest["sources"]["alpha"]
        assert source["instructions"] == len({row["instruction"] for row in part_rows}), part
        ranks = Counter(rank_bin_label(row["consistency_rank"]) for row in part_rows)
        assert {label: n for label, n in source["consistency_ranks"]["en"].items() if n} == ranks, part
        assert 0 < len(part_rows) < len(rows), part


def test_split_writes_parts_an_object_store_serves_whole(tmp_path):
    """Into a non-local fsspec file system (as gs://): each file one upload, every shard verifiable."""
    mined = write_mined_output(str(tmp_path / "mined"), {"alpha": pair_rows("alpha", 30), "beta": pair_rows("beta", 9)})
    root = f"/{tmp_path.name}"  # the memory file system lives as long as the process: a name of this test's own
    manifests = split_output(mined, f"memory://{root}/train", f"memory://{root}/heldout", fraction=0.3, seed=1)
    memory = fsspec.filesystem("memory")
    for part, written in manifests.items():
        directory = f"memory://{root}/{part}"
        assert read_manifest(directory) == written
        present = [path.removeprefix(f"{root}/{part}/") for path in memory.find(f"{root}/{part}/shards")]
        assert run_store.verify(written, STORAGE, directory, present) == [], part
    assert not [path for path in memory.find(root) if ".tmp" in path]
    assert sum(manifest.totals.output for manifest in manifests.values()) == 39


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
    pointer = state_dir(interrupted) / "latest"
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


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("small") / "mined"
    return Path(write_mined_output(str(directory), {"alpha": pair_rows("alpha", 24), "beta": pair_rows("beta", 16)}))


def refusal(argv: list[str]) -> str:
    """The one line ``main`` exits with."""
    with pytest.raises(SystemExit) as refused:
        main(argv)
    message = refused.value.code
    assert isinstance(message, str) and "\n" not in message, message
    return message


@pytest.mark.parametrize(
    ("train", "heldout", "expected"),
    [
        ("out", "out", "must be two directories, neither inside the other"),
        ("out", "out/heldout", "must be two directories, neither inside the other"),
        ("out/train/../train", "out/train/heldout", "must be two directories, neither inside the other"),
        ("mined/train", "heldout", "--train .* must lie outside the input"),
        ("train", "mined", "--heldout .* must lie outside the input"),
        (".", "../elsewhere", "--train .* must lie outside the input .* and not hold it"),
    ],
)
def test_split_refuses_outputs_that_overlap_each_other_or_the_input(small, train, heldout, expected):
    root = small.parent
    before = sorted(root.rglob("*"))
    argv = ["split", str(small), "--heldout-fraction", "0.2"]
    argv += ["--train", str(root / train), "--heldout", str(root / heldout)]
    assert re.search(expected, refusal(argv))
    assert sorted(root.rglob("*")) == before, "nothing written"


@pytest.mark.parametrize("fraction", ["0", "1", "-0.5", "1.5", "nan", "inf"])
def test_split_refuses_a_held_out_fraction_outside_0_to_1(small, tmp_path, fraction):
    argv = ["split", str(small), "--heldout-fraction", fraction]
    argv += ["--train", str(tmp_path / "t"), "--heldout", str(tmp_path / "h")]
    assert "split: the held-out fraction must lie strictly between 0 and 1" in refusal(argv)
    assert not list(tmp_path.iterdir())


def _not_mined(tmp_path: Path, kind: str) -> tuple[Path, str]:
    directory = tmp_path / "data"
    if kind == "no manifest":
        directory.mkdir()
        return directory, f"{directory} is not a mined output directory: it has no manifest.json"
    if kind == "a file":
        directory.write_text("{}")
        return directory, f"{directory} is not a mined output directory: it has no manifest.json"
    if kind == "corrupt manifest":
        directory.mkdir()
        (directory / "manifest.json").write_text('{"schema_version": 1, "pipeline": "pre')
        return directory, f"{directory / 'manifest.json'} is not a JSON object (truncated?)"
    write_mined_output(str(directory), {"alpha": []})
    return directory, f"no rows in {directory}"


@pytest.mark.parametrize(
    ("command", "kind"),
    [
        (command, kind)
        for command in ("pretrain", "finetune", "pretrain --eval-data", "split")
        for kind in ("no manifest", "a file", "corrupt manifest", "no rows")
        if (command, kind) != ("split", "no rows")  # splits into two empty outputs
    ],
)
def test_data_that_is_no_mined_output_is_one_line_before_any_work(small, tmp_path, command, kind):
    data, expected = _not_mined(tmp_path, kind)
    output = tmp_path / "out"
    if command == "split":
        argv = ["split", str(data), "--heldout-fraction", "0.5", "--train", str(output)]
        argv += ["--heldout", str(tmp_path / "h")]
    elif command == "pretrain --eval-data":
        argv = ["pretrain", "--data", str(small), "--eval-data", str(data), "--output", str(output)]
    else:
        argv = [command, "--data", str(data), "--output", str(output), "--model", str(tmp_path / "no-model")]
    message = refusal(argv)
    assert message.startswith(command.split()[0] + ": ") and expected in message, message
    assert not output.exists()


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--batch-size", "0", "--batch-size must be at least 1, not 0"),
        ("--chunk-size", "0", "--chunk-size must be at least 1, not 0"),
        ("--max-steps", "-1", "--max-steps must be at least 1, not -1"),
        ("--lr", "0", "--lr must be a positive number, not 0.0"),
        ("--lr", "nan", "--lr must be a positive number, not nan"),
        ("--temperature", "-0.1", "--temperature must be a positive number, not -0.1"),
        ("--max-grad-norm", "inf", "--max-grad-norm must be a positive number, not inf"),
        ("--weight-decay", "-1", "--weight-decay must be at least 0, not -1.0"),
        ("--warmup-steps", "-5", "--warmup-steps must be at least 0, not -5"),
        ("--seed", "-1", "--seed must be at least 0, not -1"),
        ("--seed", str(2**63), f"--seed must be below 2**63, not {2**63}"),
        ("--alpha", "nan", "--alpha must be at least 0, not nan"),
        ("--max-query-length", "0", "--max-query-length must be at least 1, not 0"),
        ("--export-max-length", "0", "--export-max-length must be at least 1, not 0"),
        ("--max-negatives", "-1", "--max-negatives must be at least 0, not -1"),
        ("--num-workers", "-2", "--num-workers must be at least 0, not -2"),
        ("--log-every", "0", "--log-every must be at least 1, not 0"),
        ("--save-every", "0", "--save-every must be at least 1, not 0"),
        ("--eval-every", "0", "--eval-every must be at least 1, not 0"),
        ("--eval-batch-size", "1", "--eval-batch-size must be at least 2, not 1"),
        ("--eval-max-pairs", "0", "--eval-max-pairs must be at least 2, not 0"),
        ("--device", "gpu0", "--device 'gpu0' is not a device"),
        ("--device", "cuda:99", "--device cuda:99: this machine has"),
        ("--eval-task", "bogus=/nowhere", "--eval-task must be tatoeba=DIR or retrieval=PATH, not 'bogus=/nowhere'"),
        ("--eval-task", "tatoeba", "--eval-task must be tatoeba=DIR or retrieval=PATH, not 'tatoeba'"),
    ],
)
def test_an_option_out_of_range_is_one_line_before_any_work(small, tmp_path, option, value, expected):
    output = tmp_path / "out"
    message = refusal(["pretrain", "--data", str(small), "--output", str(output), option, value])
    assert message.startswith(f"pretrain: {expected}"), message
    assert not output.exists()


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_finetune_refuses_epochs_that_are_not_positive(small, tmp_path, value):
    argv = ["finetune", "--data", str(small), "--model", str(tmp_path / "m"), "--output", str(tmp_path / "o")]
    assert refusal([*argv, "--epochs", value]) == f"finetune: --epochs must be a positive number, not {float(value)}"


def test_an_output_that_is_a_file_is_one_line(small, tmp_path):
    output = tmp_path / "ckpt"
    output.write_text("not a checkpoint")
    message = refusal(["pretrain", "--data", str(small), "--output", str(output)])
    assert message == f"pretrain: {output} is a file, not a checkpoint directory: choose another --output"
    resumed = refusal(["pretrain", "--output", str(output), "--resume"])
    assert resumed == f"pretrain: {output} holds no training state to resume"
    assert output.read_text() == "not a checkpoint"


def test_missing_evaluation_data_is_one_line_before_any_work(small, tmp_path):
    missing = tmp_path / "xquad.de.json"
    argv = ["pretrain", "--data", str(small), "--output", str(tmp_path / "out"), "--eval-task", f"retrieval={missing}",
            "--batch-size", "8", "--max-steps", "1", "--num-workers", "0", "--no-progress"]  # fmt: skip
    with one_thread():
        message = refusal(argv)
    assert message == f"pretrain: --eval-task retrieval={missing}: {missing} does not exist"
    assert not (tmp_path / "out").exists()


def test_a_damaged_shard_met_by_a_loader_worker_is_one_line(small, tmp_path):
    data = Path(shutil.copytree(small, tmp_path / "mined"))
    model = tmp_path / "model"
    tiny_encoder(["alpha beta question answer"] * 4).save_pretrained(model)
    for shard in data.rglob("*.arrow"):  # whichever the first batch reads
        shard.write_bytes(shard.read_bytes()[:100])
    argv = ["finetune", "--data", str(data), "--model", str(model), "--output", str(tmp_path / "out"),
            "--batch-size", "8", "--max-steps", "2", "--num-workers", "1", "--no-progress"]  # fmt: skip
    with one_thread():
        message = refusal(argv)
    expected = rf"finetune: shard {data}/\S+\.arrow is truncated: 100 bytes but its manifest says \d+"
    assert re.fullmatch(expected, message), message


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--model", "python:no_such_module:encode"], "evaluate: cannot load --model python:no_such_module:encode: "),
        (["--model", "python:json"], "evaluate: cannot load --model python:json: python:MODULE:CALLABLE needs a module"),
        (["--model", "DIRECTORY"], "evaluate: cannot load --model DIRECTORY: "),
        (["--model", "DIRECTORY", "--batch-size", "0"], "evaluate: --batch-size must be at least 1, not 0"),
    ],
)
def test_evaluate_refuses_an_unloadable_model_or_a_bad_batch_size_in_one_line(tmp_path, extra, expected):
    extra = [str(tmp_path) if item == "DIRECTORY" else item for item in extra]
    expected = expected.replace("DIRECTORY", str(tmp_path))
    assert refusal(["evaluate", "tatoeba", "--data", str(tmp_path), *extra]).startswith(expected)
