"""Pairs per second for the whole pretrain pipeline and for each stage's function alone.

    python benchmarks/mining_throughput.py [--pairs 20000] [--workers 1]

Input: sentence-transformers JSON lines built from the shared Tatoeba data,
a short sentence as the query and ~170 characters of further sentences in the
same language as the passage, in every language there. The gap between the
sum of the stage functions and the Beam run is Beam's overhead.
"""

import argparse
import io
import json
import random
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import beam_runner  # noqa: E402
from mining import dedup, langid, near_dup, shards  # noqa: E402
from mining.clean import CleanOptions, clean_batch  # noqa: E402
from mining.records import DeadLetter, Drop  # noqa: E402
from mining.sources import ReadLimits, ReadTask, get_reader  # noqa: E402
from schemas import reasons

TATOEBA = REPO.parent / "shared" / "data" / "tatoeba"
PASSAGE_CHARS = 170


def build_input(path: Path, pairs: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    by_language = {}
    for file in sorted(TATOEBA.glob("tatoeba.*-eng.*")):
        if not file.name.endswith(".eng"):
            by_language[file.suffix] = file.read_text("utf-8").splitlines()
    by_language["eng"] = (TATOEBA / "tatoeba.fra-eng.eng").read_text("utf-8").splitlines()
    languages = sorted(by_language)
    with path.open("w", encoding="utf-8") as out:
        for _ in range(pairs):
            sentences = by_language[rng.choice(languages)]
            query = rng.choice(sentences)
            passage = ""
            while len(passage) < PASSAGE_CHARS:
                passage = f"{passage} {rng.choice(sentences)}".strip()
            out.write(json.dumps([query, passage], ensure_ascii=False) + "\n")


def timed(label: str, n: int, fn):
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    print(f"{label:<28} {n / seconds:>10,.0f} pairs/s   ({seconds:.2f} s)")
    return result, seconds


def stage_functions(path: Path, pairs: int) -> float:
    reader = get_reader("sbert")
    task = ReadTask("sbert", (str(path),), None)

    def read():
        return [item for item in reader.read(task, lambda p: open(p, "rb"), ReadLimits()) if not isinstance(item, DeadLetter)]

    records, t_read = timed("read + parse", pairs, read)
    (kept, _), t_clean = timed("clean (ftfy, html, unicode)", len(records), lambda: clean_batch(records, CleanOptions()))
    identifier = langid.FastTextIdentifier()
    options = langid.LidOptions()
    batches = [kept[i : i + 512] for i in range(0, len(kept), 512)]

    def identify():
        return [r for batch in batches for r in langid.identify_batch(batch, identifier, options)[0]]

    identified, t_lid = timed("language ID (fastText)", len(kept), identify)

    def exact_dedup():
        out = identified
        keys = ((dedup.pair_key, reasons.DUPLICATE_PAIR), (dedup.passage_key, reasons.DUPLICATE_PASSAGE))
        for key_fn, reason in keys:
            groups = defaultdict(list)
            for record in out:
                groups[key_fn(record)].append(record)
            out = [r for key, group in groups.items() for r in dedup.keep_smallest_id(group, reason, key) if not isinstance(r, Drop)]
        return out

    unique, t_dedup = timed("exact dedup (keys + pick)", len(identified), exact_dedup)

    def near_dedup():
        options = near_dup.NearDupOptions()
        hasher = options.hasher()
        buckets = defaultdict(list)
        for first in range(0, len(unique), 512):
            for key, record_id in near_dup.band_keys(unique[first : first + 512], hasher, options, {"sbert": False}):
                buckets[key].append(record_id)
        return [edge for ids in buckets.values() for edge in near_dup.bucket_edges(ids)]

    _, t_near = timed("near dedup (MinHash + LSH)", len(unique), near_dedup)
    _, t_write = timed("encode Arrow shard", len(unique), lambda: shards.encode_shard(unique))
    total = t_read + t_clean + t_lid + t_dedup + t_near + t_write
    print(f"{'all stage functions':<28} {pairs / total:>10,.0f} pairs/s   ({total:.2f} s)")
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = tmp / "input" / "pairs.jsonl"
        path.parent.mkdir()
        build_input(path, args.pairs)
        mean_chars = sum(len(json.loads(line)[1]) for line in path.open()) / args.pairs
        print(f"{args.pairs} pairs, passages of {mean_chars:.0f} chars on average\n")
        stage_functions(path, args.pairs)
        beam_args = [f"--source=sbert={path}", f"--output={tmp / 'out'}", f"--direct_num_workers={args.workers}"]
        _, seconds = timed(
            f"Beam pipeline ({args.workers} worker{'s' if args.workers > 1 else ''})",
            args.pairs,
            lambda: beam_runner.main(beam_args) if sys.stdout.__class__ is io.StringIO else _quiet(beam_runner.main, beam_args),
        )
        print(f"{'  per core':<28} {args.pairs / seconds / args.workers:>10,.0f} pairs/s")


def _quiet(fn, *args):
    stdout = sys.stdout
    sys.stdout = io.StringIO()
    try:
        return fn(*args)
    finally:
        sys.stdout = stdout


if __name__ == "__main__":
    main()
