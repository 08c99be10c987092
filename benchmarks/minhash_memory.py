"""Peak memory of local runs with near-duplicate clusters, at two corpus sizes.

    python benchmarks/minhash_memory.py [--pairs 10000 100000] [--workers 2]

Input: news articles (JSON lines) of ~190 characters from the shared Tatoeba
sentences, a quarter of them near-copies of earlier ones (a word changed or a
sentence added), so the number of clusters grows with the corpus. Each run is
``beam_runner.py`` in a subprocess with worker processes
(``--direct_running_mode=multi_processing``), with near-dup on and off.

What near-dup holds is one bucket, or one id's neighbours, at a time, so
its cost in memory is the difference between the "on" and "off" rows, which
must not grow with the number of clusters. Both rows grow with the corpus
through the local runner: the FnApiRunner process is the shuffle and holds
every PCollection between stages (a distributed runner spills to its shuffle
service), hands each worker a stage's input as one bundle, and the shard
writer holds a shard (up to --shard-size-mb).
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TATOEBA = REPO.parent / "shared" / "data" / "tatoeba"
PASSAGE_CHARS = 170


def build_input(path: Path, pairs: int, seed: int = 0) -> int:
    """Articles, a quarter of them near-copies; returns how many copies."""
    rng = random.Random(seed)
    languages = [p.read_text("utf-8").splitlines() for p in sorted(TATOEBA.glob("tatoeba.*-eng.*"))]
    articles, copies = [], 0
    for number in range(pairs):
        if articles and rng.random() < 0.25:
            words = rng.choice(articles)["text"].split(" ")
            if rng.random() < 0.5:
                words[rng.randrange(len(words))] = "zzyzx"
            else:
                words.append("Read more tomorrow.")
            text, copies = " ".join(words), copies + 1
        else:
            sentences, text = rng.choice(languages), ""
            while len(text) < PASSAGE_CHARS:
                text = f"{text} {rng.choice(sentences)}".strip()
        articles.append({"title": f"Article {number}", "text": text})
    with path.open("w", encoding="utf-8") as out:
        for article in articles:
            out.write(json.dumps(article, ensure_ascii=False) + "\n")
    return copies


def _children() -> dict[int, list[int]]:
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry))
    return children


def _peak_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run(source: Path, output: Path, workers: int, near_dup: str) -> tuple[float, int, int, dict]:
    """Seconds, the runner's and the largest worker's peak RSS (KiB), and the manifest's totals."""
    command = [
        sys.executable, str(REPO / "beam_runner.py"), f"--source=ccnews={source}", f"--output={output}",
        f"--near-dup={near_dup}", f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing",
    ]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    runner_peak, worker_peaks = 0, {}
    while process.poll() is None:
        runner_peak = max(runner_peak, _peak_kib(process.pid))
        tree, pending = _children(), [process.pid]
        while pending:
            for child in tree.get(pending.pop(), []):
                worker_peaks[child] = max(worker_peaks.get(child, 0), _peak_kib(child))
                pending.append(child)
        time.sleep(0.2)
    seconds = time.perf_counter() - start
    if process.returncode:
        raise SystemExit(process.stderr.read())
    totals = json.loads((output / "manifest.json").read_text("utf-8"))["totals"]
    return seconds, runner_peak, max(worker_peaks.values(), default=0), totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, nargs="+", default=[10000, 100000])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    print(
        f"{'pairs':>7} {'copies':>7} {'near-dup':>8} {'dropped':>8} {'seconds':>8}"
        f" {'runner MiB':>10} {'worker MiB':>10}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for pairs in args.pairs:
            source = Path(tmp) / f"news-{pairs}.jsonl"
            copies = build_input(source, pairs)
            for near_dup in ("on", "off"):
                output = Path(tmp) / f"out-{pairs}-{near_dup}"
                seconds, runner, worker, totals = run(source, output, args.workers, near_dup)
                dropped = totals["dropped"].get("near_duplicate", 0)
                print(
                    f"{pairs:>7} {copies:>7} {near_dup:>8} {dropped:>8} {seconds:>8.1f}"
                    f" {runner / 1024:>10.0f} {worker / 1024:>10.0f}"
                )


if __name__ == "__main__":
    main()
