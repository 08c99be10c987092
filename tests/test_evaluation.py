"""Evaluation metrics on constructed embeddings where the right answer is known."""

import json
import zlib

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score

from training.evaluation import (
    EvaluationDataError, RetrievalSet, beir_set, bitext_scores, evaluate_retrieval, evaluate_tatoeba,
    retrieval_scores, search, squad_set, tatoeba_pairs,
)


def _unit(rows) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_search_in_blocks_equals_search_at_once_and_breaks_ties_by_index():
    rng = np.random.default_rng(0)
    queries, corpus = _unit(rng.normal(size=(7, 16))), _unit(rng.normal(size=(1000, 16)))
    corpus[500] = corpus[3]  # a tie: the lower index must win
    queries[0] = corpus[3]
    whole = search(queries, corpus, k=10, block=10_000)
    assert np.array_equal(search(queries, corpus, k=10, block=64), whole)
    assert whole[0, 0] == 3 and whole[0, 1] == 500
    expected = np.argsort(-(queries @ corpus.T), axis=1, kind="stable")[:, :10]
    assert np.array_equal(whole[1:], expected[1:])


def test_bitext_scores_match_mteb_definition():
    gold = np.arange(6)
    retrieved = np.array([0, 1, 1, 3, 3, 3])
    scores = bitext_scores(retrieved, gold)
    assert scores["accuracy"] == pytest.approx(3 / 6)
    # MTEB passes the retrieved indices as y_true and the gold ones as y_pred, weighted average.
    for name, metric in (("precision", precision_score), ("recall", recall_score), ("f1", f1_score)):
        expected = metric(retrieved, gold, average="weighted", zero_division=0)
        assert scores[name] == pytest.approx(expected), name
    assert bitext_scores(gold, gold) == pytest.approx({"accuracy": 1.0, "precision": 1.0, "recall": 1.0, "f1": 1.0})


def test_retrieval_scores_on_known_rankings():
    ranked = np.array([[5, 1, 2] + list(range(10, 107)), [0, 1, 2] + list(range(10, 107))])
    relevant = [{1: 1, 2: 2}, {50: 1}]
    scores = retrieval_scores(ranked, relevant)
    ideal = 2 / np.log2(2) + 1 / np.log2(3)
    first = (1 / np.log2(3) + 2 / np.log2(4)) / ideal
    assert scores["ndcg@10"] == pytest.approx(first / 2)
    assert scores["mrr@10"] == pytest.approx((1 / 2) / 2)
    assert scores["recall@1"] == 0 and scores["recall@10"] == pytest.approx(0.5)
    assert scores["recall@100"] == pytest.approx((1 + 1) / 2)


class _LookupEncoder:
    """Embeds a text by its fixed vector: the right answers are known."""

    def __init__(self, vectors: dict[str, np.ndarray]):
        self.vectors = vectors

    def encode(self, texts, kind):
        return _unit([self.vectors[text] for text in texts])


def test_tatoeba_task_and_its_errors(tmp_path):
    (tmp_path / "tatoeba.deu-eng.deu").write_text("eins\nzwei\ndrei\n")
    (tmp_path / "tatoeba.deu-eng.eng").write_text("one\ntwo\nthree\n")
    (tmp_path / "tatoeba.fra-eng.fra").write_text("")
    (tmp_path / "tatoeba.fra-eng.eng").write_text("")
    vectors = {"eins": [1, 0, 0], "zwei": [0, 1, 0.1], "drei": [0, 1, 0], "one": [1, 0, 0], "two": [0, 1, 0.2],
               "three": [0, 0.1, 1]}
    encoder = _LookupEncoder({key: np.array(value, dtype=float) for key, value in vectors.items()})
    report = evaluate_tatoeba(encoder, str(tmp_path), ["deu"])
    assert report["per_language"]["deu"]["accuracy"] == pytest.approx(2 / 3)
    assert report["mean"]["accuracy"] == pytest.approx(2 / 3)
    with pytest.raises(EvaluationDataError, match="fra-eng.fra is empty"):
        tatoeba_pairs(str(tmp_path), ["fra"])
    with pytest.raises(EvaluationDataError, match="no tatoeba.xyz-eng.xyz"):
        tatoeba_pairs(str(tmp_path), ["xyz"])


def test_squad_and_beir_layouts(tmp_path):
    squad = squad_set("../shared/data/xquad/xquad.de.json")
    assert len(squad.queries) == 1190 and len(squad.corpus) == 240
    assert all(len(judged) == 1 for judged in squad.relevant)

    (tmp_path / "topics.tsv").write_text("q1\tquestion one\nq2\tquestion two\nq3\tunjudged\n")
    (tmp_path / "qrels.tsv").write_text("q1 Q0 d1 1\nq1 Q0 d2 0\nq2 Q0 d3 2\n")
    (tmp_path / "corpus.jsonl").write_text(
        '{"docid": "d1", "title": "T", "text": "one"}\n{"docid": "d2", "title": "", "text": "two"}\n'
        '{"docid": "d3", "title": "", "text": "three"}\n'
    )
    data = beir_set(str(tmp_path))
    assert data.queries == ["question one", "question two"] and data.corpus == ["T\none", "two", "three"]
    assert data.relevant == [{0: 1, 1: 0}, {2: 2}]


def test_cross_lingual_and_pooled_retrieval():
    vectors = {"q-en": [1, 0], "q-de": [1, 0], "doc-en": [1, 0], "doc-de": [0.9, 0.1], "other-en": [0, 1],
               "other-de": [0.1, 1]}
    encoder = _LookupEncoder({key: np.array(value, dtype=float) for key, value in vectors.items()})
    sets = {
        "en": RetrievalSet(["q-en"], ["doc-en", "other-en"], [{0: 1}]),
        "de": RetrievalSet(["q-de"], ["doc-de", "other-de"], [{0: 1}]),
    }
    own = evaluate_retrieval(encoder, sets)
    assert own["per_language"]["en"]["recall@1"] == 1 and own["per_language"]["de"]["recall@1"] == 1
    crossed = evaluate_retrieval(encoder, sets, corpus_language="en")
    assert crossed["per_language"]["de"]["mrr@10"] == 1
    pooled = evaluate_retrieval(encoder, sets, pooled=True)
    assert pooled["per_language"]["de"]["recall@10"] == 1 and pooled["per_language"]["de"]["recall@1"] == 0


# --- a trained model, end to end ----------------------------------------------------------------

TATOEBA_SUBSET = ("fra", "por", "nld")


def lexical_encoder(texts, kind):
    """A python:MODULE:CALLABLE encoder: hashed character trigrams, no model at all."""
    vectors = np.zeros((len(texts), 512), dtype=np.float32)
    for row, text in enumerate(texts):
        for i in range(len(text) - 2):
            vectors[row, zlib.crc32(text[i : i + 3].lower().encode()) % 512] += 1
    return vectors + 1e-6


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tatoeba_dir):
    from tests.training_fixtures import mine_samples, one_thread
    from training.trainer import PretrainConfig, pretrain

    root = tmp_path_factory.mktemp("evaluated")
    subset = root / "tatoeba"
    subset.mkdir()
    for code in TATOEBA_SUBSET:
        for suffix in (code, "eng"):
            (subset / f"tatoeba.{code}-eng.{suffix}").write_bytes((tatoeba_dir / f"tatoeba.{code}-eng.{suffix}").read_bytes())
    config = PretrainConfig(
        data=[str(mine_samples(root / "mined"))], output=str(root / "ckpt"), batch_size=32, max_steps=100, lr=5e-4,
        max_query_length=32, max_passage_length=64, num_workers=0, log_every=50, eval_every=100, eval_batch_size=64,
        eval_tasks=[f"tatoeba={subset}", "retrieval=../shared/data/xquad/xquad.de.json"], progress=False,
    )
    with one_thread():
        logged = pretrain(config)
    return {"logged": [record for record in logged if "tatoeba/accuracy" in record], "ckpt": root / "ckpt",
            "tatoeba": subset}


def test_training_logs_benchmark_scores_and_they_improve(trained):
    untrained, trained_scores = trained["logged"]
    assert (untrained["step"], trained_scores["step"]) == (0, 100)
    assert trained_scores["tatoeba/accuracy"] > untrained["tatoeba/accuracy"] > 10 * (1 / 1000)
    assert trained_scores["retrieval/ndcg@10"] > untrained["retrieval/ndcg@10"]
    assert trained_scores["retrieval/recall@10"] > 2 * (10 / 240), "above chance on 240 XQuAD contexts"


def test_evaluate_command_with_each_encoder_spec(trained, tmp_path, capsys):
    from training.cli import main

    out = tmp_path / "tatoeba.json"
    main(["evaluate", "tatoeba", "--model", str(trained["ckpt"]), "--data", str(trained["tatoeba"]), "--json", str(out)])
    report = json.loads(out.read_text())
    assert set(report["per_language"]) == set(TATOEBA_SUBSET) and report["model"] == str(trained["ckpt"])
    assert "mean" in capsys.readouterr().out

    main(["evaluate", "tatoeba", "--model", f"st:{trained['ckpt']}", "--data", str(trained["tatoeba"]),
          "--languages", "fra", "--json", str(tmp_path / "st.json")])
    via_st = json.loads((tmp_path / "st.json").read_text())["per_language"]["fra"]["accuracy"]
    assert via_st == pytest.approx(report["per_language"]["fra"]["accuracy"], abs=0.005)

    main(["evaluate", "retrieval", "--model", "python:tests.test_evaluation:lexical_encoder",
          "--data", "../shared/data/xquad/xquad.de.json", "--data", "../shared/data/xquad/xquad.en.json",
          "--corpus-language", "en", "--json", str(tmp_path / "cross.json")])
    crossed = json.loads((tmp_path / "cross.json").read_text())
    assert set(crossed["per_language"]) == {"de", "en"}
    assert crossed["per_language"]["en"]["recall@10"] > crossed["per_language"]["de"]["recall@10"]

    with pytest.raises(SystemExit, match="no tatoeba.xyz-eng.xyz"):
        main(["evaluate", "tatoeba", "--model", "python:tests.test_evaluation:lexical_encoder",
              "--data", str(trained["tatoeba"]), "--languages", "xyz"])
