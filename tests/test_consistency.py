"""The consistency filter: the ranking on constructed embeddings, then the whole pipeline on XQuAD
pairs of which 30% have been given another question's passage."""

import hashlib
import json
import random
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import beam_runner
from inspection.html_report import report_html
from mining.consistency import judge, passage_ranks, pool_key, resolve_top_k
from mining.records import Drop
from schemas.manifest import RANK_BIN_LABELS, Manifest, rank_bin_label
from tests.conftest import SHARED_DATA, write_lines

TRIGRAM_DIMENSIONS = 4096
MISMATCHED_SHARE = 0.3


def trigram_vectors(texts: list[str], kind: str) -> np.ndarray:
    """A deterministic stand-in encoder: hashed character trigrams of the lower-cased words."""
    vectors = np.zeros((len(texts), TRIGRAM_DIMENSIONS), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in text.lower().split():
            padded = f" {word} "
            for start in range(len(padded) - 2):
                vectors[row, zlib.crc32(padded[start : start + 3].encode("utf-8")) % TRIGRAM_DIMENSIONS] += 1
    return np.log1p(vectors)


ENCODER = f"python:{__name__}:trigram_vectors"


def padded_trigram_vectors(texts: list[str], kind: str) -> np.ndarray:
    """As a model whose output changes with the padding of its batch, exaggerated: an extra column holds the
    length of the longest text embedded in the same call."""
    vectors = trigram_vectors(texts, kind)
    return np.hstack([vectors, np.full((len(texts), 1), max(map(len, texts)) / 100, dtype=np.float32)])


PADDED_ENCODER = f"python:{__name__}:padded_trigram_vectors"


def unit(rows) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_ranks_on_constructed_embeddings():
    pool = unit([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]])
    pool_keys = np.array([10, 11, 12, 13], dtype=np.uint64)
    queries = unit([[1, 0.1, 0], [1, 0.1, 0], [0, 0, 1]])
    passages = unit([[1, 0.1, 0], [0, 0, 1], [0, 0, 1]])
    # Pair 0: its passage beats the whole pool. Pair 1: its passage scores 0, beaten by every pool
    # entry but [0,0,1], which ties (ties never count against it) -> 4.
    # Pair 2: its passage IS pool entry 12, which is skipped.
    keys = np.array([1, 2, 12], dtype=np.uint64)
    for block in (1, 2, 3, 1 << 22):
        assert passage_ranks(queries, passages, keys, pool, pool_keys, block=block).tolist() == [1, 4, 1]
    assert passage_ranks(queries, passages, keys, pool[:0], pool_keys[:0]).tolist() == [1, 1, 1]


def test_top_k_bins_and_judgement():
    assert resolve_top_k(2, 1000) == 2
    assert resolve_top_k(0.01, 1000) == 10
    assert resolve_top_k(0.0001, 1000) == 1
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError):
            resolve_top_k(bad, 1000)
    assert [rank_bin_label(rank) for rank in (1, 2, 3, 4, 5, 8, 9, 2**16, 2**16 + 1)] == [
        "1", "2", "3-4", "3-4", "5-8", "5-8", "9-16", "32769-65536", "beyond",
    ]
    assert RANK_BIN_LABELS[-1] == "beyond"
    assert judge({"id": "a"}, 2, 2, 100) == {"id": "a", "consistency_rank": 2}
    drop = judge({"id": "a"}, 3, 2, 100)
    assert isinstance(drop, Drop) and drop.reason == "inconsistent" and drop.record["consistency_rank"] == 3
    assert "rank 3" in drop.detail
    assert pool_key(0, "a") == pool_key(0, "a") != pool_key(1, "a")


def xquad_pairs() -> list[tuple[str, str]]:
    data = json.loads((SHARED_DATA / "xquad" / "xquad.en.json").read_text("utf-8"))
    return [
        (qa["question"], paragraph["context"])
        for article in data["data"]
        for paragraph in article["paragraphs"]
        for qa in paragraph["qas"]
    ]


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory) -> tuple[Path, set[str]]:
    """XQuAD's English questions, 30% of them paired with another article's passage, mined with the
    pretrain pipeline; and the mismatched questions."""
    pairs = xquad_pairs()
    rng = random.Random(7)
    mismatched = set(rng.sample(range(len(pairs)), int(MISMATCHED_SHARE * len(pairs))))
    passages = [passage for _, passage in pairs]
    lines = []
    for index, (question, passage) in enumerate(pairs):
        if index in mismatched:
            passage = rng.choice([other for other in passages[:: 7] if other != passage])
        lines.append([question, passage])
    root = tmp_path_factory.mktemp("mixed")
    write_lines(root / "qa.jsonl", lines)
    output = root / "mined"
    args = [f"--source=sbert:en={root}/qa.jsonl", f"--output={output}", "--near-dup=off", "--shard-size-mb=0.1"]
    assert beam_runner.main(args) == 0
    return output, {pairs[index][0] for index in mismatched}


def run_filter(mined: Path, output: Path, *extra: str) -> Manifest:
    args = ["--pipeline=consistency", f"--input={mined}", f"--output={output}", f"--model={ENCODER}", *extra]
    assert beam_runner.main(args) == 0
    return Manifest.model_validate_json((output / "manifest.json").read_text("utf-8"))


def rows_of(directory: Path, manifest: Manifest) -> list[dict]:
    return [
        row
        for shard in manifest.shards
        for row in pa.ipc.open_stream((directory / shard.path).read_bytes()).read_all().to_pylist()
    ]


@pytest.fixture(scope="module")
def filtered(mixed_run, tmp_path_factory):
    mined, _ = mixed_run
    output = tmp_path_factory.mktemp("filtered")
    return output, run_filter(mined, output, "--pool-size=500", "--top-k=1", "--seed=3")


def test_filter_drops_mismatched_and_keeps_true_pairs(mixed_run, filtered):
    mined, mismatched = mixed_run
    output, manifest = filtered
    parent = Manifest.model_validate_json((mined / "manifest.json").read_text("utf-8"))
    kept = rows_of(output, manifest)
    dropped = parent.totals.output - len(kept)
    kept_mismatched = sum(row["query"] in mismatched for row in kept)
    dropped_mismatched = len(mismatched) - kept_mismatched
    precision = dropped_mismatched / dropped  # of the dropped pairs, how many were mismatched
    recall = dropped_mismatched / len(mismatched)
    kept_true = (len(kept) - kept_mismatched) / (parent.totals.output - len(mismatched))
    print(f"precision {precision:.3f} recall {recall:.3f} true pairs kept {kept_true:.3f}")
    assert recall > 0.9 and precision > 0.7 and kept_true > 0.8
    assert all(row["consistency_rank"] == 1 for row in kept)


def test_manifest_records_parent_histogram_and_conservation(mixed_run, filtered):
    mined, _ = mixed_run
    output, manifest = filtered
    parent_bytes = (mined / "manifest.json").read_bytes()
    parent = Manifest.model_validate_json(parent_bytes)
    assert manifest.parent.path == str(mined)
    assert manifest.parent.sha256 == hashlib.sha256(parent_bytes).hexdigest()
    assert manifest.pipeline == parent.pipeline == "pretrain"
    assert manifest.options["model"] == ENCODER and manifest.options["pool_size"] == 500
    assert manifest.schema_["consistency_rank"] == "int32"
    totals = manifest.totals
    assert totals.input == parent.totals.output
    assert totals.input == totals.output + totals.dropped["inconsistent"] and totals.dead_letter == 0
    (source,) = manifest.sources.values()
    histogram = source.consistency_ranks["en"]
    assert list(histogram) == list(RANK_BIN_LABELS)
    assert sum(histogram.values()) == totals.input and histogram["1"] == totals.output
    rejected = [json.loads(line) for line in (output / "rejected" / "inconsistent.jsonl").read_text().splitlines()]
    assert rejected and all(row["consistency_rank"] > 1 and "rank" in row["detail"] for row in rejected)
    page = report_html(manifest, "filtered")
    assert "Consistency ranks" in page and "Consistency ranks" not in report_html(parent, "parent")


def test_same_input_model_and_seed_give_the_same_shards_whatever_the_workers(mixed_run, tmp_path):
    mined, _ = mixed_run
    options = ("--pool-size=300", "--top-k=2", f"--model={PADDED_ENCODER}", "--batch-size=200", "--seed=3")
    one = run_filter(mined, tmp_path / "one", *options)
    two = run_filter(
        mined, tmp_path / "two", *options, "--encode-batch-size=64",
        "--direct_num_workers=2", "--direct_running_mode=multi_threading",
    )  # fmt: skip
    assert one.totals.dropped and [shard.sha256 for shard in two.shards] == [shard.sha256 for shard in one.shards]


def test_refuses_missing_input_and_model(tmp_path):
    with pytest.raises(SystemExit, match="needs --input"):
        beam_runner.main(["--pipeline=consistency", f"--output={tmp_path / 'out'}"])
    with pytest.raises(SystemExit, match="not a finished run"):
        beam_runner.main(
            ["--pipeline=consistency", f"--input={tmp_path}", f"--output={tmp_path / 'out'}", f"--model={ENCODER}"]
        )
