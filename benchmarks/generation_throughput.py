"""Prompts per second of --pipeline generate against the test server (tests/llm_server.py) on 127.0.0.1,
without and with injected faults, and what a rerun into the same output asks for.

    python benchmarks/generation_throughput.py [--generations 600] [--concurrency 16] [--latency 0.05]

The server answers each request after ``--latency`` seconds (a stand-in for a model's time to answer; 0 measures
the client and pipeline alone). Faults: per attempt, 10% 429 (Retry-After 0.05 s), 10% 500, 5% truncated bodies
and 5% slow responses (+0.5 s); every prompt is answered by its fifth attempt. "pipeline" is the whole Beam run
(start-up included); "sender" is ``mining.llm_client.Sender.send_all`` alone over the same prompts.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import beam_runner  # noqa: E402
from mining import generation, instruct  # noqa: E402
from mining.llm_client import ClientOptions, Sender  # noqa: E402
from schemas.manifest import Manifest  # noqa: E402
from tests.llm_server import FakeLLM, Faults  # noqa: E402

MODEL = "gpt-4o-mini"


class LatentFaults(Faults):
    """Faults, and every answer delayed by ``latency`` seconds."""

    def __init__(self, latency: float, **kwargs):
        super().__init__(**kwargs)
        self.latency = latency

    def pick(self, digest, attempt, content):
        time.sleep(self.latency)
        return super().pick(digest, attempt, content)


def faults(latency: float, faulty: bool) -> Faults:
    if not faulty:
        return LatentFaults(latency)
    return LatentFaults(latency, rates={"429": 0.1, "500": 0.1, "truncate": 0.05, "slow": 0.05}, retry_after=0.05,
                        slow_seconds=0.5, answer_after=4)


def pipeline_run(output: Path, server: FakeLLM, args, *extra: str) -> tuple[float, Manifest]:
    argv = [
        "--pipeline=generate", f"--output={output}", f"--generations={args.generations}", f"--llm-model={MODEL}",
        f"--llm-base-url={server.base_url}", f"--llm-concurrency={args.concurrency}", "--llm-backoff=0.05",
        "--llm-max-retries=6", f"--batch-size={args.batch_size}", *extra,
    ]
    start = time.perf_counter()
    with open(os.devnull, "w") as quiet:
        stdout, sys.stdout = sys.stdout, quiet
        try:
            assert beam_runner.main(argv) == 0
        finally:
            sys.stdout = stdout
    elapsed = time.perf_counter() - start
    return elapsed, Manifest.model_validate_json((output / "manifest.json").read_text("utf-8"))


def sender_run(server: FakeLLM, args) -> tuple[float, int]:
    tasks = {task_type: ["Retrieve documents that answer a question."] for task_type in generation.BRAINSTORM_PROMPTS}
    prompts = [generation.generation_prompt(i, list(instruct.TEMPLATES), tasks, seed=0) for i in range(args.generations)]
    sender = Sender(ClientOptions(server.base_url, MODEL, concurrency=args.concurrency, backoff=0.05),
                    generation.Sampling(), os.environ["OPENAI_API_KEY"])
    start = time.perf_counter()
    outcomes = sender.send_all(prompts)
    elapsed = time.perf_counter() - start
    sender.close()
    assert all(outcome.reason is None for outcome in outcomes)
    return elapsed, len(prompts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generations", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the server takes per answer")
    args = parser.parse_args()
    os.environ.setdefault("OPENAI_API_KEY", "sk-benchmark")
    print(f"{args.generations} generations, concurrency {args.concurrency}, server latency {args.latency:g}s")
    with tempfile.TemporaryDirectory() as scratch:
        for faulty in (False, True):
            label = "with faults" if faulty else "no faults"
            with FakeLLM(faults(args.latency, faulty)) as server:
                seconds, count = sender_run(server, args)
                print(f"{label:12s} sender:   {count / seconds:8.1f} prompts/s ({server.requests} requests "
                      f"for {count} prompts, {seconds:.2f}s)")
                server.reset()
                output = Path(scratch) / label.replace(" ", "-")
                seconds, manifest = pipeline_run(output, server, args)
                record = manifest.generation
                print(f"{label:12s} pipeline: {record.prompts / seconds:8.1f} prompts/s ({record.requests} requests "
                      f"for {record.prompts} prompts, {dict(server.faults_served) or 'no faults'}, {seconds:.2f}s)")
                server.reset()
                seconds, manifest = pipeline_run(output, server, args, "--overwrite")
                record = manifest.generation
                print(f"{label:12s} rerun:    {server.requests} requests, {record.cached} of {record.prompts} prompts "
                      f"from the cache, {seconds:.2f}s")


if __name__ == "__main__":
    main()
