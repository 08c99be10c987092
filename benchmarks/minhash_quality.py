"""Precision and recall of near-duplicate removal on copies planted among XQuAD paragraphs.

    python benchmarks/minhash_quality.py [--copies 1200] [--threshold 0.8] [--hash fast|sha1]

Every XQuAD paragraph (240 in each of 7 languages, ~780 characters) is in the
set once; some get one copy with a small edit: two words changed (characters
in Chinese), punctuation changed, casing changed, or a short sentence added;
a fifth of the copies get all four edits at once, a harder case reported on
its own. The set goes through the pipeline's NearDedup transform on the
FnApiRunner. A cluster of n planted texts should lose n - 1 of them:

    precision = correct removals / removals, recall = correct removals / planted copies

with correct removals = sum over planted clusters of min(removed, n - 1).
Misses are broken down by edit and shown against the copies' true Jaccard
similarity to their original.
"""

import argparse
import hashlib
import json
import random
import re
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import apache_beam as beam
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mining import minhash  # noqa: E402
from mining.near_dup import NearDupOptions  # noqa: E402
from mining.records import new_pair  # noqa: E402
from pipelines.near_dup import NearDedup  # noqa: E402
from pipelines.reporting import RunContext  # noqa: E402

XQUAD = REPO.parent / "shared" / "data" / "xquad"
EDITS = ("words", "punctuation", "casing", "sentence", "combined")
SMALL_EDITS = EDITS[:-1]
_SENTENCE = re.compile(r"(?<=[.!?।。！？])\s*")


def paragraphs() -> dict[str, list[str]]:
    by_lang = {}
    for path in sorted(XQUAD.glob("xquad.*.json")):
        articles = json.loads(path.read_text("utf-8"))["data"]
        by_lang[path.stem.split(".")[1]] = [paragraph["context"] for a in articles for paragraph in a["paragraphs"]]
    return by_lang


def change_words(text: str, lang: str, rng: random.Random, vocabulary: list[str]) -> str:
    if lang == "zh":
        chars = list(text)
        for index in rng.sample(range(len(chars)), 2):
            chars[index] = rng.choice(vocabulary)
        return "".join(chars)
    words = text.split(" ")
    for index in rng.sample(range(len(words)), min(2, len(words))):
        words[index] = rng.choice(vocabulary)
    return " ".join(words)


def change_punctuation(text: str, rng: random.Random) -> str:
    return text.replace(",", "").replace(". ", "! ", 2).replace("(", "- ").replace(")", " -") + rng.choice("!?")


def change_casing(text: str, rng: random.Random) -> str:
    return rng.choice([str.upper, str.lower, str.title])(text)


def add_sentence(text: str, sentences: list[str], rng: random.Random) -> str:
    return f"{text} {rng.choice(sentences)}"


def planted_set(copies: int, seed: int = 0):
    """Records, the planted cluster of each record id, and the edit of each copy (at most one per paragraph)."""
    rng = random.Random(seed)
    by_lang = paragraphs()
    texts, cluster_of, edit_of = [], {}, {}
    for lang, items in by_lang.items():
        for index, text in enumerate(items):
            texts.append((lang, text, (lang, index), None))
    originals = [(lang, index) for lang, items in by_lang.items() for index in range(len(items))]
    for lang, index in rng.sample(originals, copies):
        text = by_lang[lang][index]
        others = [t for i, t in enumerate(by_lang[lang]) if i != index]
        sentences = [s for t in others for s in _SENTENCE.split(t) if 20 <= len(s) <= 60]
        vocabulary = list("的是了不在人有我他这中大来上国") if lang == "zh" else [w for t in others[:20] for w in t.split()]
        edit = rng.choice(EDITS)
        if edit in ("words", "combined"):
            text = change_words(text, lang, rng, vocabulary)
        if edit in ("punctuation", "combined"):
            text = change_punctuation(text, rng)
        if edit in ("casing", "combined"):
            text = change_casing(text, rng)
        if edit in ("sentence", "combined"):
            text = add_sentence(text, sentences, rng)
        texts.append((lang, text, (lang, index), edit))
    records = []
    for number, (lang, text, cluster, edit) in enumerate(texts):
        record = new_pair("ccnews", f"title {number}", text, query_lang=lang, passage_lang=lang)
        record_id = hashlib.blake2b(f"{number}".encode(), digest_size=16).hexdigest()
        record.update(id=record_id, query_lang=lang, passage_lang=lang)
        cluster_of[record["id"]] = cluster
        if edit:
            edit_of[record["id"]] = edit
        records.append(record)
    return records, cluster_of, edit_of


def removed_ids(records: list[dict], options: NearDupOptions) -> set[str]:
    with tempfile.TemporaryDirectory() as tmp:
        with beam.Pipeline(runner=FnApiRunner()) as pipeline:
            result = (
                pipeline
                | beam.Create(records, reshuffle=False)
                | NearDedup(options, {"ccnews": True}, RunContext(batch_size=512, sample_size=0))
            )
            result.kept | beam.Map(lambda record: record["id"]) | beam.io.WriteToText(f"{tmp}/kept")
        kept = {line.strip() for path in Path(tmp).glob("kept*") for line in path.open()}
    return {record["id"] for record in records} - kept


def jaccard(first: str, second: str, shingling: minhash.Shingling) -> float:
    a, b = set(minhash.shingles(first, shingling)), set(minhash.shingles(second, shingling))
    return len(a & b) / len(a | b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=1200)
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--hash", choices=("sha1", "fast"), default=NearDupOptions.hash)
    args = parser.parse_args()
    options = NearDupOptions(threshold=args.threshold, hash=args.hash)
    records, cluster_of, edit_of = planted_set(args.copies)
    removed = removed_ids(records, options)

    members = defaultdict(list)
    for record_id, cluster in cluster_of.items():
        members[cluster].append(record_id)
    text_of = {record["id"]: record["passage"] for record in records}
    original = {cluster_of[r["id"]]: r["passage"] for r in records if r["id"] not in edit_of}
    similarity = {i: jaccard(text_of[i], original[cluster_of[i]], options.shingling) for i in edit_of}
    # At most one copy per paragraph: it is found when its cluster lost a member.
    found = {i for i in edit_of if set(members[cluster_of[i]]) & removed}
    wrong = {i for i in removed if len(members[cluster_of[i]]) == 1}
    bands, rows = options.bands
    print(f"{len(records)} texts, {len(edit_of)} of them planted copies")
    print(f"threshold {args.threshold}: {bands} bands x {rows} rows")
    print(f"removed {len(removed)}, of them unrelated paragraphs: {len(wrong)}\n")
    print(f"{'copies':<22} {'n':>5} {'precision':>9} {'recall':>7} {'Jaccard p10/p50':>16}")
    for label, edits in (("small edits", SMALL_EDITS), ("all four edits at once", ("combined",)), ("all", EDITS)):
        ids = sorted(i for i, edit in edit_of.items() if edit in edits)
        clusters = {cluster_of[i] for i in ids}
        # Removals are counted once per cluster (any member may be the one kept), unrelated ones always.
        correct = len(found & set(ids))
        removals = correct + len(wrong)
        values = sorted(similarity[i] for i in ids)
        print(
            f"{label:<22} {len(ids):>5} {correct / max(removals, 1):>9.3f} {correct / len(ids):>7.3f}"
            f" {values[len(values) // 10]:>9.2f}/{values[len(values) // 2]:.2f}"
        )
        assert len(clusters) == len(ids)
    print(f"\n{'edit':<12} {'copies':>6} {'recall':>7}")
    for edit in EDITS:
        ids = [i for i, e in edit_of.items() if e == edit]
        print(f"{edit:<12} {len(ids):>6} {len(found & set(ids)) / len(ids):>7.3f}")
    print(f"\n{'true Jaccard':<12} {'copies':>6} {'recall':>7}")
    for low, high in ((0.0, 0.7), (0.7, 0.8), (0.8, 0.85), (0.85, 0.9), (0.9, 0.95), (0.95, 1.01)):
        ids = [i for i, value in similarity.items() if low <= value < high]
        if ids:
            print(f"{low:.2f}-{min(high, 1):.2f}    {len(ids):>6} {len(found & set(ids)) / len(ids):>7.3f}")

if __name__ == "__main__":
    main()
