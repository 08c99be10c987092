"""Peak RSS of the default pretrain chain at 1x and 10x distinct input, and on hot keys.

    python benchmarks/mining_memory.py [--pairs 20000 200000] [--hot 200000] [--workers 1] [--only scale|hot]
                                       [--running-mode in_memory|multi_processing]

Scale rows: distinct multilingual pairs from mining_throughput's builder (the
shared Tatoeba data); the target is a 10x row at most 1.3x the 1x row's peak.
Hot rows: one passage under that many distinct queries (one exact-dedup
group), and that many near-identical passages, a number apart (one LSH bucket
per band). Each run is beam_runner.py in a fresh subprocess; its peak is the
largest process of its tree (os.wait4's rusage), so worker processes count.
With ``--running-mode multi_processing`` the SDK workers are processes of their own
and the peaks of the runner (which holds a local run's shuffles) and of its largest
worker are also shown apart (each process's VmHWM, read while it runs).
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from mining_throughput import PASSAGE_CHARS, TATOEBA, build_input  # noqa: E402


def _english_sentences() -> list[str]:
    return (TATOEBA / "tatoeba.fra-eng.eng").read_text("utf-8").splitlines()


def build_hot_passage(path: Path, copies: int, seed: int = 0) -> None:
    """One passage answering ``copies`` distinct queries."""
    rng = random.Random(seed)
    sentences = _english_sentences()
    passage = ""
    while len(passage) < PASSAGE_CHARS:
        passage = f"{passage} {rng.choice(sentences)}".strip()
    with path.open("w", encoding="utf-8") as out:
        for number in range(copies):
            out.write(json.dumps([f"{rng.choice(sentences)} {number}", passage], ensure_ascii=False) + "\n")


def build_hot_bucket(path: Path, copies: int, seed: int = 0) -> None:
    """``copies`` passages that differ by a trailing number only, each under its own query."""
    rng = random.Random(seed)
    sentences = _english_sentences()
    passage = ""
    while len(passage) < 3 * PASSAGE_CHARS:
        passage = f"{passage} {rng.choice(sentences)}".strip()
    with path.open("w", encoding="utf-8") as out:
        for number in range(copies):
            query = f"{rng.choice(sentences)} {number}"
            out.write(json.dumps([query, f"{passage} {number}"], ensure_ascii=False) + "\n")


def _peak_kib(pid: int) -> int | None:
    """The process's peak RSS so far (VmHWM), or None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), None)


def _children(pid: int) -> list[int]:
    """Children of every thread of ``pid`` (the runner starts its workers from threads of its own)."""
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(child) for child in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            pass
    return children


def _watch_peaks(root: int, peaks: dict[int, int], done: threading.Event) -> None:
    """Each process of the tree under ``root`` -> its last seen VmHWM, until ``done``."""
    while not done.wait(0.1):
        pending = [root]
        while pending:
            pid = pending.pop()
            peak = _peak_kib(pid)
            if peak is not None:
                peaks[pid] = max(peaks.get(pid, 0), peak)
            pending += _children(pid)


def run(
    source: Path, output: Path, workers: int, passage_dedup: str, running_mode: str = "in_memory"
) -> tuple[float, int, dict, int, int | None]:
    """Seconds, peak RSS (KiB) of the run's largest process, the manifest's totals, and the peaks (KiB, as
    last seen) of the runner process and of its largest worker process (None: no worker processes)."""
    command = [
        sys.executable, str(REPO / "beam_runner.py"), f"--source=sbert={source}", f"--output={output}",
        f"--direct_num_workers={workers}", f"--direct_running_mode={running_mode}", f"--passage-dedup={passage_dedup}",
    ]
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peaks: dict[int, int] = {}
    done = threading.Event()
    watcher = threading.Thread(target=_watch_peaks, args=(process.pid, peaks, done), daemon=True)
    watcher.start()
    stderr = process.stderr.read()
    done.set()
    watcher.join()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(stderr.decode("utf-8", "replace")[-2000:])
    totals = json.loads((output / "manifest.json").read_text("utf-8"))["totals"]
    runner = peaks.pop(process.pid, 0)
    return seconds, usage.ru_maxrss, totals, runner, max(peaks.values(), default=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, nargs=2, default=[20000, 200000], metavar=("SMALL", "LARGE"))
    parser.add_argument("--hot", type=int, default=200000, help="copies of the hot passage, members of the hot bucket")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--only", choices=("scale", "hot"))
    parser.add_argument("--running-mode", choices=("in_memory", "multi_processing"), default="in_memory")
    args = parser.parse_args()
    runs = []
    if args.only != "hot":
        runs += [(f"distinct {pairs}", lambda path, pairs=pairs: build_input(path, pairs), "auto") for pairs in args.pairs]
    if args.only != "scale":
        runs += [
            # Passage dedup on, as in the sources where a repeated passage is a duplicate.
            (f"hot passage {args.hot}", lambda path: build_hot_passage(path, args.hot), "on"),
            (f"hot bucket {args.hot}", lambda path: build_hot_bucket(path, args.hot), "on"),
        ]
    apart = args.running_mode == "multi_processing"
    print(f"{'input':<22} {'written':>8} {'dropped':>8} {'exact dup':>9} {'near dup':>8} {'seconds':>8} {'peak MiB':>9}"
          + (f" {'runner MiB':>10} {'worker MiB':>10}" if apart else ""))
    peaks = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, build, passage_dedup in runs:
            directory = Path(tmp) / label.replace(" ", "-")
            (directory / "input").mkdir(parents=True)
            source = directory / "input" / "pairs.jsonl"
            build(source)
            seconds, peak, totals, runner, worker = run(
                source, directory / "out", args.workers, passage_dedup, args.running_mode
            )
            peaks[label] = peak
            dropped = totals["dropped"]
            exact = dropped.get("duplicate_pair", 0) + dropped.get("duplicate_passage", 0)
            print(
                f"{label:<22} {totals['output']:>8} {sum(dropped.values()):>8} {exact:>9}"
                f" {dropped.get('near_duplicate', 0):>8} {seconds:>8.1f} {peak / 1024:>9.0f}"
                + (f" {runner / 1024:>10.0f} {(worker or 0) / 1024:>10.0f}" if apart else "")
            )
            source.unlink()
    if args.only != "hot":
        small, large = (peaks[f"distinct {pairs}"] for pairs in args.pairs)
        print(f"peak RSS ratio {args.pairs[1]} / {args.pairs[0]}: {large / small:.2f}x")


if __name__ == "__main__":
    main()
