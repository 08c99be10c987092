"""Every pipeline through Beam's portable job API (PortableRunner, the API Flink, Spark and Dataflow
Runner v2 run jobs through) gives the FnApiRunner's output byte for byte.

Beam's own local job service stands in for the Flink and Spark job servers, which cannot be fetched
here; its SDK workers are the submitting process (LOOPBACK) or those of an external worker pool
(EXTERNAL). The DOCKER and PROCESS environments are not tried.
"""

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

import beam_runner
from tests.conftest import REPO
from tests.llm_server import FakeLLM
from tests.test_consistency import ENCODER

SAMPLES = REPO / "mining" / "samples"


def _environ() -> dict[str, str]:
    return {
        **os.environ,
        # Started services and portable runs import this checkout, whatever an installed copy points at.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        # The worker pool starts each SDK worker as `python -c ...`: let that be this interpreter.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _serve(module: str, port_option: str, log: Path):
    """Start ``python -m module port_option=PORT`` and wait until its gRPC port accepts a connection."""
    port = _free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", module, f"{port_option}={port}"], cwd=REPO, env=_environ(), stdout=out,
            stderr=subprocess.STDOUT,
        )
    address = f"localhost:{port}"
    with grpc.insecure_channel(address) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=120)
        except grpc.FutureTimeoutError:
            process.kill()
            raise RuntimeError(f"{module} did not start: {log.read_text(errors='replace')[-2000:]}") from None
    return process, address


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def job_endpoint(tmp_path_factory):
    process, address = _serve(
        "apache_beam.runners.portability.local_job_service_main", "--port",
        tmp_path_factory.mktemp("job-service") / "log",
    )
    yield address
    _stop(process)


@pytest.fixture(scope="session")
def worker_pool(tmp_path_factory):
    """(address, log) of a worker pool; the log names each SDK worker it starts."""
    log = tmp_path_factory.mktemp("worker-pool") / "log"
    process, address = _serve("apache_beam.runners.worker.worker_pool_main", "--service_port", log)
    yield address, log
    _stop(process)


def workers_started(worker_pool: tuple[str, Path]) -> int:
    return worker_pool[1].read_text(errors="replace").count("Starting worker")


def loopback(job_endpoint: str, runner: str = "PortableRunner") -> list[str]:
    return [f"--runner={runner}", f"--job_endpoint={job_endpoint}", "--environment_type=LOOPBACK"]


def external(job_endpoint: str, worker_pool: tuple[str, Path]) -> list[str]:
    return ["--runner=PortableRunner", f"--job_endpoint={job_endpoint}", "--environment_type=EXTERNAL",
            f"--environment_config={worker_pool[0]}"]


def written(output: Path) -> tuple[dict, dict]:
    """(sha256 of every file of the run but the manifest, the manifest without its creation time)."""
    files = {
        str(path.relative_to(output)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(output.rglob("*"))
        if path.is_file() and path.name != "manifest.json"
    }
    manifest = json.loads((output / "manifest.json").read_text("utf-8"))
    manifest.pop("created")
    return files, manifest


def assert_same_run(portable: Path, local: Path) -> None:
    files, manifest = written(portable)
    local_files, local_manifest = written(local)
    assert files == local_files
    assert manifest == local_manifest
    assert manifest["shards"] or manifest["generation"]["files"], "the runs wrote something to compare"


def assert_same_on_both(args: list[str], portable_options: list[str], tmp_path: Path) -> None:
    assert beam_runner.main([*args, f"--output={tmp_path / 'local'}"]) == 0
    assert beam_runner.main([*args, f"--output={tmp_path / 'portable'}", *portable_options]) == 0
    assert_same_run(tmp_path / "portable", tmp_path / "local")


def test_default_pretrain_run_through_an_external_worker_pool(default_pretrain_run, job_endpoint, worker_pool,
                                                              tmp_path):
    """A user's submission, ``python beam_runner.py --runner PortableRunner --job_endpoint ...``, from a
    directory other than the pool's, with a relative --output: the run lands where the user said."""
    local, _ = default_pretrain_run
    started = workers_started(worker_pool)
    done = subprocess.run(
        [sys.executable, str(REPO / "beam_runner.py"), "--output=run", *external(job_endpoint, worker_pool)],
        cwd=tmp_path, env=_environ(), capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (REPO / "run").exists(), "the pool's workers wrote into their own directory"
    assert_same_run(tmp_path / "run", local)
    assert workers_started(worker_pool) > started, "the pool's workers ran it"


# Small inputs with what each pipeline has on top of the default run's stages: finetune's negatives
# (joined through a shuffle) and --exclude's side input; instruct's templates. Near-dup's rounds, the
# default run's already, would double the time of these.
MINED = {
    "finetune": [
        f"--source=nli={SAMPLES}/nli/*", f"--exclude={SAMPLES}/squad/*", "--shard-size-mb=0.01", "--near-dup=off",
    ],
    "instruct": [f"--source=synthetic={SAMPLES}/synthetic/*", "--shard-size-mb=0.01", "--near-dup=off"],
}


# FlinkRunner and SparkRunner are PortableRunners that start Flink's or Spark's job server from its jar
# unless given --job_endpoint, a job server already running: here the local one stands in for it.
@pytest.mark.parametrize(("pipeline", "runner"), [("finetune", "FlinkRunner"), ("instruct", "SparkRunner")])
def test_mining_pipelines_through_loopback_workers(pipeline, runner, job_endpoint, tmp_path):
    assert_same_on_both([f"--pipeline={pipeline}", *MINED[pipeline]], loopback(job_endpoint, runner), tmp_path)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A small finished run of a few shards for the pipelines that read one."""
    output = tmp_path_factory.mktemp("finished") / "run"
    args = [f"--source=sbert={SAMPLES}/sbert/*", "--shard-size-mb=0.03", "--near-dup=off", f"--output={output}"]
    assert beam_runner.main(args) == 0
    return output


def _derived(pipeline: str, finished_run: Path, *extra: str) -> list[str]:
    # The test encoder of test_consistency: hashed trigrams, no download.
    return [f"--pipeline={pipeline}", f"--input={finished_run}", f"--model={ENCODER}", "--device=cpu", *extra]


def test_consistency_through_loopback_workers(finished_run, job_endpoint, tmp_path):
    args = _derived("consistency", finished_run, "--pool-size=100", "--top-k=3")
    assert_same_on_both(args, loopback(job_endpoint), tmp_path)


def test_hardnegatives_through_an_external_worker_pool(finished_run, job_endpoint, worker_pool, tmp_path):
    args = _derived("hardnegatives", finished_run, "--rank-window=2:20", "--num-negatives=3")
    started = workers_started(worker_pool)
    assert_same_on_both(args, external(job_endpoint, worker_pool), tmp_path)
    assert workers_started(worker_pool) > started, "the pool's workers ran it"


def test_a_data_error_on_a_worker_is_one_line(job_endpoint, worker_pool, tmp_path):
    """The runner reports a worker's failure as the worker's traceback in text; the user reads one line."""
    benchmark = tmp_path / "benchmark.json"
    benchmark.write_text('{"data": [', "utf-8")
    args = [f"--source=sbert={SAMPLES}/sbert/qa.jsonl", f"--exclude={benchmark}", "--near-dup=off",
            f"--output={tmp_path / 'out'}"]
    done = subprocess.run(
        [sys.executable, "beam_runner.py", *args, *external(job_endpoint, worker_pool)],
        cwd=REPO, env=_environ(), capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 1
    # Said once, with no traceback (other lines, such as a warning of a slow start, may come before it).
    assert "Traceback" not in done.stderr and done.stderr.count("is not SQuAD JSON") == 1, done.stderr[-3000:]
    last = done.stderr.splitlines()[-1]
    assert last.startswith(f"the run stopped, nothing was published: {benchmark} is not SQuAD JSON: ")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_generate_through_loopback_workers(job_endpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-portable")
    with FakeLLM() as server:
        args = ["--pipeline=generate", "--generations=12", "--llm-model=gpt-4o-mini",
                f"--llm-base-url={server.base_url}", "--batch-size=4"]
        assert_same_on_both(args, loopback(job_endpoint), tmp_path)
