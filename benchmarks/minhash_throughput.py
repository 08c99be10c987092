"""MinHash signatures per second: datasketch's update_batch against mining.minhash on the same texts.

    python benchmarks/minhash_throughput.py [--texts 20000] [--num-perm 128] [--batch 512] [--rounds 3]

Texts: the passages of benchmarks/mining_throughput.py (Tatoeba sentences in
56 languages, ~190 characters) and XQuAD paragraphs (~780 characters in 7
languages), character 5-gram shingles. datasketch gets its shingles ready
made, so its figure is hashing and permuting only; ours include normalising
and shingling. Signatures are checked equal on a sample first. Each round
times datasketch and then ours, in this process's CPU time (other processes on
a shared machine do not count), and the median round is printed.
"""

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from datasketch import MinHash

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mining import minhash  # noqa: E402
from mining.near_dup import NearDupOptions  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
PASSAGE_CHARS = 170


def tatoeba_passages(count: int, rng: random.Random) -> list[str]:
    by_language = [
        path.read_text("utf-8").splitlines() for path in sorted((SHARED / "tatoeba").glob("tatoeba.*-eng.*"))
    ]
    passages = []
    for _ in range(count):
        sentences, passage = rng.choice(by_language), ""
        while len(passage) < PASSAGE_CHARS:
            passage = f"{passage} {rng.choice(sentences)}".strip()
        passages.append(passage)
    return passages


def xquad_paragraphs(count: int) -> list[str]:
    paragraphs = [
        paragraph["context"]
        for path in sorted((SHARED / "xquad").glob("xquad.*.json"))
        for article in json.loads(path.read_text("utf-8"))["data"]
        for paragraph in article["paragraphs"]
    ]
    return (paragraphs * (count // len(paragraphs) + 1))[:count]


def datasketch_rate(texts: list[str], num_perm: int, shingling: minhash.Shingling) -> float:
    """datasketch as its users call it: MinHash(num_perm) with the default hash function, shingles ready."""
    shingled = [[s.encode("utf-8") for s in minhash.shingles(text, shingling)] for text in texts]
    start = time.process_time()
    for shingles in shingled:
        MinHash(num_perm).update_batch(shingles)
    return len(texts) / (time.process_time() - start)


def our_rate(texts: list[str], hasher: minhash.MinHasher, batch: int) -> float:
    hasher.signatures(texts[:batch])  # tables and permutations built once per worker
    start = time.process_time()
    for first in range(0, len(texts), batch):
        hasher.signatures(texts[first : first + batch])
    return len(texts) / (time.process_time() - start)


def check_equal(texts: list[str], hasher: minhash.MinHasher) -> None:
    hashfunc = minhash.fast_hash32 if hasher.hash == "fast" else None
    for text, signature in zip(texts, hasher.signatures(texts), strict=True):
        sketch = MinHash(hasher.num_perm, hasher.seed, hashfunc=hashfunc)
        sketch.update_batch([s.encode("utf-8") for s in minhash.shingles(text, hasher.shingling)])
        assert np.array_equal(sketch.hashvalues, signature), text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=20000)
    parser.add_argument("--num-perm", type=int, default=128)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(0)
    corpora = {
        "Tatoeba passages": tatoeba_passages(args.texts, rng),
        "XQuAD paragraphs": xquad_paragraphs(args.texts // 4),
    }
    hashes = {name: f"ours, {name}{' (default)' if name == NearDupOptions.hash else ''}" for name in ("sha1", "fast")}
    print(f"{'texts':<18} {'chars':>5}  {'datasketch':>10}  {hashes['sha1']:>17}  {hashes['fast']:>17}")
    for name, texts in corpora.items():
        chars = sum(map(len, texts)) / len(texts)
        hashers = [minhash.MinHasher(num_perm=args.num_perm, hash=hash_name) for hash_name in hashes]
        for hasher in hashers:
            check_equal(texts[:200], hasher)
        rounds = []
        for _ in range(args.rounds):
            theirs = datasketch_rate(texts[: max(len(texts) // 5, 1)], args.num_perm, minhash.Shingling())
            rounds.append([theirs] + [our_rate(texts, hasher, args.batch) for hasher in hashers])
        theirs, *ours = (statistics.median(rates) for rates in zip(*rounds))
        cells = [f"{rate:>8,.0f} ({rate / theirs:>4.1f}x)" for rate in ours]
        print(f"{name:<18} {chars:>5.0f}  {theirs:>10,.0f}  {cells[0]:>17}  {cells[1]:>17}")
    print(f"texts per CPU second, one core, median of {args.rounds} rounds; (x) against datasketch")


if __name__ == "__main__":
    main()
