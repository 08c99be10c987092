"""Hard-negative mining: the search pieces on random embeddings, then the pipeline on XQuAD pairs."""

import hashlib
from collections import Counter
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest

import beam_runner
from inspection.summary import format_summary
from mining.dedup import normalize_for_dedup, normalized_passage_key
from mining.hard_negatives import (
    block_candidate_arrays, choose_negatives, false_negative_reason, merge_candidate_arrays, parse_rank_window,
    with_texts,
)
from mining.search import pair_scores
from pipelines import hard_negatives
from schemas.manifest import Manifest
from tests.conftest import write_lines
from tests.test_consistency import ENCODER, PADDED_ENCODER, trigram_vectors, xquad_pairs


def test_blocks_merged_equal_one_search_and_the_positive_is_never_a_candidate():
    rng = np.random.default_rng(0)
    corpus = rng.normal(size=(50, 8)).astype(np.float32)
    queries = rng.normal(size=(6, 8)).astype(np.float32)
    keys = np.arange(100, 150, dtype=np.uint64)
    texts = {key: f"passage {i}" for i, key in enumerate(keys.tolist())}
    positives = keys[:6].copy()
    whole = [with_texts(found, texts) for found in block_candidate_arrays(queries, positives[:, None], corpus, keys, 10)]
    halves = [block_candidate_arrays(queries, positives[:, None], corpus[part], keys[part], 10)
              for part in (slice(0, 25), slice(25, 50))]
    merged = [with_texts(merge_candidate_arrays([first, second], 10), texts) for first, second in zip(*halves)]
    assert merged == whole
    for query, candidates in enumerate(whole):
        scores = [score for score, _, _ in candidates]
        assert scores == sorted(scores, reverse=True) and len(candidates) == 10
        assert int(positives[query]) not in [key for _, key, _ in candidates]
    assert choose_negatives(whole[0], (2, 4), 2) == ([text for _, _, text in whole[0][1:3]], {})


class NoPickle(beam.coders.Coder):
    def encode(self, value):
        raise AssertionError(f"{type(value).__name__} would be pickled")


def test_candidates_cross_the_shuffles_without_pickle_in_the_tie_order_of_uint64_keys():
    # Keys above int64 tie with a key below it: the smaller uint64 key comes first, in every cut of the corpus.
    keys = np.array([2**64 - 1, 5, 2**63 + 7, 2**63, 9], dtype=np.uint64)
    corpus = np.ones((5, 4), dtype=np.float32)
    queries = np.ones((2, 4), dtype=np.float32)
    excluded = [np.array([9], dtype=np.uint64), np.zeros(0, dtype=np.uint64)]
    texts = {key: f"passage {key}" for key in keys.tolist()}
    triples = [with_texts(found, texts) for found in block_candidate_arrays(queries, excluded, corpus, keys, 4)]
    assert [[key for _, key, _ in found] for found in triples] == [[5, 2**63, 2**63 + 7, 2**64 - 1], [5, 9, 2**63, 2**63 + 7]]
    halves = [block_candidate_arrays(queries, excluded, corpus[part], keys[part], 4) for part in (slice(0, 2), slice(2, 5))]
    merged = [merge_candidate_arrays(list(found), 4) for found in zip(*halves, strict=True)]
    assert [with_texts(found, texts) for found in merged] == triples

    coder = beam.coders.FastPrimitivesCoder(fallback_coder=NoPickle())
    search = hard_negatives.SearchBlock(4)
    corpus_part = (keys.tobytes(), tuple(texts), corpus)
    query_batch = (0, ("a", "b"), tuple(keys.tobytes() for keys in excluded), queries)
    for element in search.process((0, {"corpus": [corpus_part[::2]], "queries": [query_batch]})):
        coder.encode(element)
        merge = hard_negatives.MergeCandidates(4)
        coder.encode(merge.add_input(merge.create_accumulator(), element[1]))
        for request in hard_negatives.text_requests(*element, 2):
            coder.encode(request)
    coder.encode(next(hard_negatives.query_texts([("a", "query", "passage")], True)))
    assert hard_negatives.shuffled_key(2**64 - 1) == -1 and hard_negatives.unshuffled_key(-1) == 2**64 - 1


def test_false_negative_filters_skip_inside_the_window_and_count_per_reason():
    candidates = [(score, key, f"p{key}") for key, score in enumerate([0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5])]
    # The positive scores 0.9: a 10% margin skips what scores above 0.81, the ceiling what scores above 0.88.
    chosen = choose_negatives(candidates, (2, 6), 2, max_score=0.88, relative_margin=0.1, positive=0.9)
    assert chosen == (["p3", "p4"], {"above_max_score": 1, "within_relative_margin": 1})
    # Ranks count skipped candidates too: the window still ends at the sixth; every skip in it is counted.
    assert choose_negatives(candidates, (1, 6), 1, relative_margin=0.2, positive=0.9) == (
        ["p4"], {"within_relative_margin": 4}
    )
    assert false_negative_reason(0.95, 0.9, 0.5, 1.0) == "above_max_score"
    assert false_negative_reason(0.5, None, None, None) is None


def test_rank_window_and_normalized_key():
    assert parse_rank_window("10:100") == (10, 100)
    for bad in ("10", "0:5", "5:4", "a:b"):
        with pytest.raises(ValueError):
            parse_rank_window(bad)
    assert normalized_passage_key("The  Passage.") == normalized_passage_key("the passage")


@pytest.fixture(scope="module")
def mined(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pairs")
    write_lines(root / "qa.jsonl", [list(pair) for pair in xquad_pairs()[:300]])
    output = root / "mined"
    assert beam_runner.main([f"--source=sbert:en={root}/qa.jsonl", f"--output={output}", "--near-dup=off"]) == 0
    return output


def mine_negatives(mined: Path, output: Path) -> Manifest:
    args = ["--pipeline=hardnegatives", f"--input={mined}", f"--output={output}", f"--model={ENCODER}",
            "--rank-window=2:20", "--num-negatives=3", "--encode-batch-size=32"]
    assert beam_runner.main(args) == 0
    return Manifest.model_validate_json((output / "manifest.json").read_text("utf-8"))


def test_pipeline_fills_negatives_from_the_window(mined, tmp_path, monkeypatch):
    output = tmp_path / "negatives"
    manifest = mine_negatives(mined, output)
    parent_bytes = (mined / "manifest.json").read_bytes()
    assert manifest.pipeline == "finetune" and manifest.schema_["task"] == "string"
    assert manifest.parent.sha256 == hashlib.sha256(parent_bytes).hexdigest()
    assert manifest.totals.input == manifest.totals.output == Manifest.model_validate_json(parent_bytes).totals.output
    rows = [row for shard in manifest.shards
            for row in pa.ipc.open_stream((output / shard.path).read_bytes()).read_all().to_pylist()]
    assert len(rows) == manifest.totals.output
    assert all(len(row["negatives"]) == 3 for row in rows)
    for row in rows:
        positive = normalize_for_dedup(row["passage"])
        assert all(normalize_for_dedup(negative) != positive for negative in row["negatives"])
        assert len(set(row["negatives"])) == 3

    # The same rows when the corpus is searched in many blocks, merged by the combiner.
    monkeypatch.setattr(hard_negatives, "CORPUS_BLOCK_ROWS", 8)
    blocked = mine_negatives(mined, tmp_path / "blocked")
    assert [shard.sha256 for shard in blocked.shards] == [shard.sha256 for shard in manifest.shards]


def test_rows_of_one_query_never_get_each_others_positives(tmp_path):
    """Two rows ask one question (spelled differently) with different passages: each passage answers the
    other row too, so neither may be mined as the other's negative, however high the encoder ranks it.
    """
    first_question = {}
    for question, context in xquad_pairs():
        first_question.setdefault(context, question)
    pairs = [[question, context] for context, question in list(first_question.items())[:31]]
    shared_question = pairs[0][0]
    pairs[30][0] = shared_question.lower().replace("?", " ?")
    write_lines(tmp_path / "qa.jsonl", pairs)
    run = tmp_path / "mined"
    assert beam_runner.main([f"--source=sbert:en={tmp_path}/qa.jsonl", f"--output={run}", "--near-dup=off"]) == 0
    output = tmp_path / "negatives"
    args = ["--pipeline=hardnegatives", f"--input={run}", f"--output={output}", f"--model={ENCODER}",
            "--rank-window=1:40", "--num-negatives=40"]
    assert beam_runner.main(args) == 0
    manifest = Manifest.model_validate_json((output / "manifest.json").read_text("utf-8"))
    rows = [row for shard in manifest.shards
            for row in pa.ipc.open_stream((output / shard.path).read_bytes()).read_all().to_pylist()]
    sharing = [row for row in rows if normalize_for_dedup(row["query"]) == normalize_for_dedup(shared_question)]
    positives = {pairs[0][1], pairs[30][1]}
    assert {row["passage"] for row in sharing} == positives
    for row in sharing:
        assert positives.isdisjoint(row["negatives"]) and len(row["negatives"]) == len(rows) - 2


def scores_of(query: str, passages: list[str]) -> list[float]:
    """The test encoder's scores, as the search computes them."""
    query_row = trigram_vectors([query], "query")
    passage_rows = trigram_vectors(passages, "passage")
    norms = np.linalg.norm(passage_rows, axis=1, keepdims=True)
    return pair_scores(query_row / np.linalg.norm(query_row), passage_rows / norms).tolist()


def test_max_score_and_relative_margin_skip_the_window_candidates_they_name(mined, tmp_path):
    """Every candidate of the window (one run keeps them all), filtered here, is what a filtered run keeps."""
    window = ["--rank-window=2:12", f"--input={mined}", f"--model={ENCODER}"]
    every = tmp_path / "every"
    assert beam_runner.main(["--pipeline=hardnegatives", *window, f"--output={every}", "--num-negatives=11"]) == 0
    filtered = tmp_path / "filtered"
    filters = ["--max-score=0.35", "--relative-margin=0.4"]
    assert beam_runner.main(["--pipeline=hardnegatives", *window, f"--output={filtered}", "--num-negatives=3",
                             *filters]) == 0
    every_manifest = Manifest.model_validate_json((every / "manifest.json").read_text("utf-8"))
    manifest = Manifest.model_validate_json((filtered / "manifest.json").read_text("utf-8"))
    assert manifest.options["max_score"] == 0.35 and manifest.options["relative_margin"] == 0.4
    assert every_manifest.options["max_score"] is None and not every_manifest.sources["sbert"].skipped_negatives

    def rows(output, run_manifest):
        return {row["id"]: row for shard in run_manifest.shards
                for row in pa.ipc.open_stream((output / shard.path).read_bytes()).read_all().to_pylist()}

    expected_skips = Counter()
    filtered_rows = rows(filtered, manifest)
    for row_id, row in rows(every, every_manifest).items():
        positive, *scores = scores_of(row["query"], [row["passage"], *row["negatives"]])
        kept = []
        for negative, score in zip(row["negatives"], scores, strict=True):
            reason = false_negative_reason(score, 0.35, 0.4, positive)
            expected_skips[reason] += reason is not None
            if reason is None:
                kept.append(negative)
        assert filtered_rows[row_id]["negatives"] == kept[:3]
    del expected_skips[None]
    assert manifest.sources["sbert"].skipped_negatives == dict(expected_skips)
    assert set(expected_skips) == {"above_max_score", "within_relative_margin"}
    assert manifest.totals.input == manifest.totals.output and not manifest.totals.dropped
    summary = format_summary(manifest, str(filtered))
    skip_lines = [line.split() for line in summary.splitlines() if line.startswith("within_relative_margin")]
    assert skip_lines == [["within_relative_margin", *[str(expected_skips["within_relative_margin"])] * 2]]
    assert "skipped negatives" not in format_summary(every_manifest, str(every))


def test_shards_do_not_depend_on_the_worker_count_with_a_batch_dependent_encoder(mined, tmp_path):
    def mine(output: Path, *extra: str) -> list[str]:
        args = ["--pipeline=hardnegatives", f"--input={mined}", f"--output={output}", "--rank-window=1:5",
                f"--model={PADDED_ENCODER}", "--batch-size=64", *extra]
        assert beam_runner.main(args) == 0
        return [shard.sha256 for shard in Manifest.model_validate_json((output / "manifest.json").read_text()).shards]

    one = mine(tmp_path / "one")
    assert mine(tmp_path / "two", "--direct_num_workers=2", "--direct_running_mode=multi_threading") == one
