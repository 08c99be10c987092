"""Start-up of the command line: seconds and peak memory of ``beam_runner.py --help`` and of a small run.

    python benchmarks/startup.py [--repeat 5]

Each command runs in a fresh interpreter, ``--repeat`` times; printed are the median wall and CPU
(user + system) seconds and the largest peak RSS. The small run mines the bundled sbert QA sample
(pretrain, near-dup off), so what it measures is mostly imports, the fastText model and Beam's set-up.
CPU seconds move less than wall seconds on a machine shared with other work.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def measure(argv: list[str]) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS in MB) of one run of ``argv``."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {process.stderr.read().decode(errors='replace')[-2000:]}")
    process.stderr.close()
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        commands = {
            "beam_runner.py --help": [sys.executable, "beam_runner.py", "--help"],
            "small pretrain run": [
                sys.executable, "beam_runner.py", "--source=sbert=mining/samples/sbert/qa.jsonl", "--near-dup=off",
                f"--output={scratch}/out", "--overwrite",
            ],
        }
        print(f"{'command':<24} {'wall s':>7} {'cpu s':>7} {'peak MB':>8}")
        for name, argv in commands.items():
            runs = [measure(argv) for _ in range(args.repeat)]
            wall, cpu, rss = (statistics.median(run[0] for run in runs), statistics.median(run[1] for run in runs),
                              max(run[2] for run in runs))
            print(f"{name:<24} {wall:>7.2f} {cpu:>7.2f} {rss:>8.0f}")


if __name__ == "__main__":
    main()
