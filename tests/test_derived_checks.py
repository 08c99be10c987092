"""What the derived pipelines (consistency, hardnegatives) must survive: searches cut into other
blocks and batches, exact score ties, damaged input runs and encoders that return garbage."""

import hashlib
import json
import re
import zlib
from pathlib import Path

import numpy as np
import pytest

import beam_runner
from mining import consistency, search
from mining.consistency import passage_ranks
from mining.hard_negatives import block_candidate_arrays, merge_candidate_arrays, with_texts
from schemas.manifest import Manifest
from tests.conftest import write_lines
from tests.test_consistency import trigram_vectors, xquad_pairs
from training import evaluation

# Spelled out: worker processes import it from the repository root.
MODULE = "python:tests.test_derived_checks"


def opening_words_vectors(texts: list[str], kind: str) -> np.ndarray:
    """Nearly one direction for every text, so that scores differ by about what float32 rounding adds;
    and one vector for the texts that begin alike (a query's first three words, a passage's first:
    27 XQuAD passages below begin with 22 words), so that some scores tie exactly."""
    words = 1 if kind == "passage" else 3
    openings = [" ".join(text.split()[:words]).encode("utf-8") for text in texts]
    rows = [np.random.default_rng(zlib.crc32(opening)).normal(size=256) for opening in openings]
    return (1 + 1e-6 * np.array(rows)).astype(np.float32)


def nan_vectors(texts: list[str], kind: str) -> np.ndarray:
    vectors = trigram_vectors(texts, kind)
    vectors[::5] = np.nan
    return vectors


def infinite_vectors(texts: list[str], kind: str) -> np.ndarray:
    vectors = trigram_vectors(texts, kind)
    vectors[0, 0] = np.inf
    return vectors


def one_row_short(texts: list[str], kind: str) -> np.ndarray:
    return trigram_vectors(texts, kind)[:-1]


def narrower_passages(texts: list[str], kind: str) -> np.ndarray:
    vectors = trigram_vectors(texts, kind)
    return vectors[:, :100] if kind == "passage" else vectors


def flat_vector(texts: list[str], kind: str) -> np.ndarray:
    return trigram_vectors(texts, kind).ravel()


def ragged_rows(texts: list[str], kind: str) -> list:
    return [[1.0] * (index + 1) for index in range(len(texts))]


def tied_embeddings(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit queries and a corpus in which every row appears three times (exact ties), in 96 dimensions,
    where BLAS sums a dot product in an order that depends on the shapes of the matrices."""
    rng = np.random.default_rng(seed)
    unique = rng.normal(size=(40, 96)).astype(np.float32)
    corpus = np.concatenate([unique, unique, unique])[rng.permutation(120)]
    queries = rng.normal(size=(23, 96)).astype(np.float32)
    return (
        queries / np.linalg.norm(queries, axis=1, keepdims=True),
        corpus / np.linalg.norm(corpus, axis=1, keepdims=True),
    )


def test_scores_and_ties_do_not_depend_on_blocks_or_batches():
    queries, corpus = tied_embeddings()
    keys = np.arange(1000, 1120, dtype=np.uint64)[::-1].copy()
    texts = {key: f"passage {key}" for key in keys.tolist()}
    positives = keys[np.arange(23) % 120]

    def searched(query_rows: slice, blocks: list[slice]) -> list:
        per_block = [
            block_candidate_arrays(queries[query_rows], positives[query_rows, None], corpus[part], keys[part], 12)
            for part in blocks
        ]
        return [with_texts(merge_candidate_arrays(list(arrays), 12), texts) for arrays in zip(*per_block, strict=True)]

    whole = searched(slice(None), [slice(None)])
    cuts = ([slice(0, 50), slice(50, 120)], [slice(start, start + 7) for start in range(0, 120, 7)])
    for blocks in cuts:
        assert searched(slice(None), blocks) == whole
        assert searched(slice(0, 5), blocks) + searched(slice(5, None), blocks) == whole
    reference = queries.astype(np.float64) @ corpus.astype(np.float64).T
    key_rows = {int(key): row for row, key in enumerate(keys)}
    for query, candidates in enumerate(whole):
        scores = [score for score, _, _ in candidates]
        rows = [key_rows[key] for _, key, _ in candidates]
        np.testing.assert_allclose(scores, reference[query, rows], rtol=0, atol=1e-12)
        assert int(positives[query]) not in [key for _, key, _ in candidates]
        # Equal scores come in key order.
        assert [(-score, key) for score, key, _ in candidates] == sorted((-score, key) for score, key, _ in candidates)
    assert any(len(set(scores)) < len(scores) for scores in ([c[0] for c in found] for found in whole))


def test_consistency_ranks_do_not_depend_on_blocks_or_batches(monkeypatch):
    monkeypatch.setattr(consistency, "CLOSE_PAIRS_AT_ONCE", 5)
    queries, corpus = tied_embeddings(1)
    passages = corpus[:23]
    # Every pair's passage is also in the pool under another key: an exact tie, which the pair wins.
    pool, pool_keys = corpus, np.arange(2000, 2120, dtype=np.uint64)
    passage_keys = np.arange(23, dtype=np.uint64)
    reference = queries.astype(np.float64) @ pool.astype(np.float64).T
    own = np.einsum("ij,ij->i", queries.astype(np.float64), passages.astype(np.float64))
    expected = (reference > own[:, None] + 1e-9).sum(axis=1) + 1
    for block in (1, 23 * 7, 23 * 50, 1 << 22):
        ranks = passage_ranks(queries, passages, passage_keys, pool, pool_keys, block=block)
        assert ranks.tolist() == expected.tolist()
        halves = [passage_ranks(queries[part], passages[part], passage_keys[part], pool, pool_keys, block=block)
                  for part in (slice(0, 4), slice(4, None))]
        assert np.concatenate(halves).tolist() == expected.tolist()
    # An encoder giving every text one vector: every pool entry ties with every pair's passage.
    same = np.repeat(corpus[:1], 23, axis=0)
    assert passage_ranks(same, same, passage_keys, np.repeat(corpus[:1], 120, axis=0), pool_keys).tolist() == [1] * 23


def test_evaluation_search_does_not_depend_on_the_block():
    queries, corpus = tied_embeddings(2)
    whole = evaluation.search(queries, corpus, 15)
    for block in (7, 50, 119):
        assert evaluation.search(queries, corpus, 15, block=block).tolist() == whole.tolist()
    reference = queries.astype(np.float64) @ corpus.astype(np.float64).T
    for query, row in enumerate(whole):
        expected = sorted(range(120), key=lambda index: (-round(reference[query, index], 9), index))[:15]
        assert row.tolist() == expected
    assert evaluation.search(queries[:0], corpus, 5).shape == (0, 5)


def test_pair_scores_depend_on_the_two_vectors_alone():
    queries, corpus = tied_embeddings(3)
    alone = [float(search.pair_scores(queries[i : i + 1], corpus[j : j + 1])[0]) for i in range(5) for j in range(9)]
    together = search.pair_scores(np.repeat(queries[:5], 9, axis=0), np.tile(corpus[:9], (5, 1))).tolist()
    assert together == alone
    fast = queries @ corpus.T
    exact = queries.astype(np.float64) @ corpus.astype(np.float64).T
    assert np.abs(fast - exact).max() <= search.error_bound(queries, corpus)


@pytest.mark.parametrize(
    ("function", "problem"),
    [
        ("nan_vectors", "NaN or infinite values for 2 of 7 query texts"),
        ("infinite_vectors", "NaN or infinite values for 1 of 7 query texts"),
        ("one_row_short", r"shape \(6, 4096\) for 7 query texts"),
        ("flat_vector", r"shape \(28672,\) for 7 query texts"),
        ("ragged_rows", "no array of numbers"),
    ],
)
def test_an_encoder_returning_garbage_is_named(function, problem):
    encoder = evaluation.load_encoder(f"{MODULE}:{function}")
    named = re.escape(f"encoder {MODULE}:{function} returned ")
    with pytest.raises(evaluation.EncoderOutputError, match=f"^{named}{problem}"):
        encoder.encode([f"text number {index}" for index in range(7)], "query")


def test_an_encoder_changing_its_width_is_named():
    encoder = evaluation.load_encoder(f"{MODULE}:narrower_passages")
    assert encoder.encode(["a question"], "query").shape == (1, 4096)
    with pytest.raises(evaluation.EncoderOutputError, match="returned 100 dimensions for passage texts after 4096"):
        encoder.encode(["a passage"], "passage")


# --- the pipelines -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    """160 XQuAD pairs (many questions share a passage) in several shards."""
    root = tmp_path_factory.mktemp("small")
    write_lines(root / "qa.jsonl", [list(pair) for pair in xquad_pairs()[:160]])
    output = root / "mined"
    args = [f"--source=sbert:en={root}/qa.jsonl", f"--output={output}", "--near-dup=off", "--shard-size-mb=0.02"]
    assert beam_runner.main(args) == 0
    assert len(Manifest.model_validate_json((output / "manifest.json").read_text("utf-8")).shards) > 1
    return output


def derive(pipeline: str, run: Path, output: Path, *extra: str, model: str = f"{MODULE}:opening_words_vectors"):
    args = [f"--pipeline={pipeline}", f"--input={run}", f"--output={output}", f"--model={model}", *extra]
    assert beam_runner.main(args) == 0
    manifest = Manifest.model_validate_json((output / "manifest.json").read_text("utf-8"))
    return [(shard.path, shard.sha256) for shard in manifest.shards], manifest.totals


PIPELINE_OPTIONS = {
    "hardnegatives": ("--rank-window=1:6", "--num-negatives=4"),
    "consistency": ("--pool-size=60", "--top-k=0.5", "--seed=5"),
}


@pytest.mark.parametrize("pipeline", sorted(PIPELINE_OPTIONS))
def test_same_shards_on_every_run_whatever_the_workers_and_batches(pipeline, small_run, tmp_path):
    options = PIPELINE_OPTIONS[pipeline]
    one = derive(pipeline, small_run, tmp_path / "one", *options, "--batch-size=5", "--encode-batch-size=3")
    two = derive(
        pipeline, small_run, tmp_path / "two", *options, "--batch-size=32", "--encode-batch-size=32",
        "--direct_num_workers=2", "--direct_running_mode=multi_processing",
    )
    assert one[1].output > 0
    assert two == one


def test_an_encoder_returning_nan_fails_the_run_naming_it(small_run, tmp_path):
    model = f"{MODULE}:nan_vectors"
    with pytest.raises(SystemExit, match=re.escape(f"encoder {model} returned NaN")) as failure:
        derive("consistency", small_run, tmp_path / "out", "--pool-size=50", model=model)
    assert "\n" not in str(failure.value)
    assert not (tmp_path / "out" / "manifest.json").exists()


def copy_run(run: Path, target: Path) -> tuple[Path, list]:
    for path in run.rglob("*"):
        if path.is_file():
            (target / path.relative_to(run)).parent.mkdir(parents=True, exist_ok=True)
            (target / path.relative_to(run)).write_bytes(path.read_bytes())
    return target, Manifest.model_validate_json((target / "manifest.json").read_text("utf-8")).shards


def one_line_refusal(args: list[str]) -> str:
    with pytest.raises(SystemExit) as refusal:
        beam_runner.main(args)
    message = str(refusal.value)
    assert "\n" not in message and "Traceback" not in message
    return message


@pytest.mark.parametrize("damage", ["truncated", "missing"])
@pytest.mark.parametrize(("pipeline", "damaged"), [("consistency", "--input"), ("hardnegatives", "--corpus")])
def test_a_truncated_or_missing_shard_is_one_line_before_any_work(pipeline, damaged, damage, small_run, tmp_path):
    copy, shards = copy_run(small_run, tmp_path / "copy")
    shard = copy / shards[1].path
    if damage == "missing":
        shard.unlink()
    else:
        shard.write_bytes(shard.read_bytes()[:-10])
    inputs = [f"--input={copy}"] if damaged == "--input" else [f"--input={small_run}", f"--corpus={copy}"]
    message = one_line_refusal(
        [f"--pipeline={pipeline}", *inputs, f"--output={tmp_path / 'out'}", f"--model={MODULE}:nan_vectors"]
    )
    said = "missing" if damage == "missing" else f"{shards[1].bytes - 10} bytes, manifest says {shards[1].bytes}"
    assert message == f"{damaged} {copy}: {shards[1].path}: {said}"
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("pipeline", sorted(PIPELINE_OPTIONS))
def test_a_flipped_byte_fails_the_run_naming_the_shard(pipeline, small_run, tmp_path):
    copy, shards = copy_run(small_run, tmp_path / "copy")
    shard = copy / shards[0].path
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    named = re.escape(f"--input {copy}: {shards[0].path}: ")
    named_hashes = f"{named}.*{hashlib.sha256(data).hexdigest()}.*{shards[0].sha256}"
    with pytest.raises(SystemExit, match=named_hashes) as failure:
        derive(pipeline, copy, tmp_path / "out", *PIPELINE_OPTIONS[pipeline])
    assert "\n" not in str(failure.value)
    assert not (tmp_path / "out" / "manifest.json").exists()


@pytest.mark.parametrize("pipeline", sorted(PIPELINE_OPTIONS))
def test_an_input_without_a_readable_manifest_is_one_line(pipeline, small_run, tmp_path):
    copy, _ = copy_run(small_run, tmp_path / "copy")
    args = [
        f"--pipeline={pipeline}", f"--input={copy}", f"--output={tmp_path / 'out'}", f"--model={MODULE}:nan_vectors",
    ]
    manifest = copy / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:100])
    assert "manifest.json" in one_line_refusal(args)
    manifest.write_text(json.dumps({"schema_version": "nonsense"}))
    assert "manifest.json" in one_line_refusal(args)
    manifest.unlink()
    assert one_line_refusal(args) == f"--input {copy} holds no manifest.json: not a finished run"
