"""Teacher scores: the BGE reader's published scores, ``--pipeline teacher`` with a tiny randomly initialised
cross-encoder and with python: callables, and the fine-tuning run that distils from them."""

import hashlib
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from sentence_transformers import CrossEncoder, SentenceTransformer
from transformers import BertConfig, BertForSequenceClassification

import beam_runner
from inspection.summary import format_summary
from mining import teacher
from mining.clean import CleanOptions, clean_pair
from mining.records import new_pair
from mining.sources import get_reader
from schemas.manifest import Manifest, Teacher
from schemas.pairs import TEACHER_SCORES
from training.cli import main as training_main
from training.holdout import split_output
from training.tiny import train_tokenizer

CALLABLES = "python:tests.test_teacher"


def label_teacher(queries, passages):
    """Knows the answer: the bundled rows' positives are longer than their negatives, as a stand-in label."""
    return np.array([len(passage) / 100.0 for passage in passages])


def nan_for_german(queries, passages):
    return np.array([math.nan if "Pflanzen" in query else 1.0 for query in queries])


def length_probability(queries, passages):
    """A cross-encoder stand-in for the false-negative filters: longer texts score higher, in [0, 1]."""
    return np.array([min(1.0, len(passage) / 1000) for passage in passages])


def nan_for_long_texts(queries, passages):
    return np.array([math.nan if len(passage) > 200 else 0.1 for passage in passages])


def words_not_scores(queries, passages):
    return ["high"] * len(queries)


def tensor_with_its_graph(queries, passages):
    return torch.ones(len(queries), requires_grad=True) * 2


def two_scores_per_pair(queries, passages):
    return np.zeros((len(queries), 2))


@pytest.fixture(scope="module")
def cross_encoder(tmp_path_factory) -> Path:
    """A sentence-transformers-loadable cross-encoder: a BERT of one layer, random weights, a vocabulary trained
    on the bundled fine-tuning samples, saved as safetensors."""
    directory = tmp_path_factory.mktemp("cross-encoder")
    texts = [
        line for path in Path("mining/samples").glob("*/*.jsonl") for line in path.read_bytes().decode("utf-8", "replace").splitlines()
    ]
    tokenizer = train_tokenizer(texts, vocab_size=2000, max_length=256)
    config = BertConfig(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, hidden_size=32, num_hidden_layers=1,
        num_attention_heads=1, intermediate_size=64, max_position_embeddings=256, num_labels=1,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BertForSequenceClassification(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def finetune_run(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("finetune") / "run"
    assert beam_runner.main(["--pipeline=finetune", f"--output={output}"]) == 0
    return output


def _rows(run: Path) -> list[dict]:
    manifest = Manifest.model_validate_json((run / "manifest.json").read_text())
    rows = []
    for shard in manifest.shards:
        with pa.ipc.open_stream(run / shard.path) as reader:
            rows.extend(reader.read_all().to_pylist())
    return sorted(rows, key=lambda row: row["id"])


def _teacher(run: Path, output: Path, model: str, *extra: str) -> int:
    return beam_runner.main(["--pipeline=teacher", f"--input={run}", f"--model={model}", f"--output={output}", *extra])


def _shard_hashes(run: Path) -> dict[str, str]:
    return {shard["path"]: shard["sha256"] for shard in json.loads((run / "manifest.json").read_text())["shards"]}


# --- published scores --------------------------------------------------------------------------------


class _Task:
    lang = "en"


def _parse(line: dict) -> list:
    reader = get_reader("retrieval")
    return reader.record_items(lambda: reader.parse(line, _Task(), "o"), "f", 1, line)


def test_bge_scores_become_each_positives_teacher_scores():
    rows = _parse({"query": "q", "pos": ["a", "b"], "neg": ["x", "y"], "pos_scores": [9, 8.5], "neg_scores": [1, -2]})
    assert [row[TEACHER_SCORES] for row in rows] == [[9.0, 1.0, -2.0], [8.5, 1.0, -2.0]]
    unscored = _parse({"query": "q", "pos": ["a"], "neg": ["x"], "pos_scores": [9.0]})  # no neg_scores: no group
    assert unscored[0][TEACHER_SCORES] is None


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ({"query": "q", "pos": ["a"], "neg": ["x", "y"], "pos_scores": [1.0], "neg_scores": [1.0]}, "missing_field"),
        ({"query": "q", "pos": ["a"], "neg": [], "pos_scores": ["high"], "neg_scores": []}, "wrong_type"),
        ({"query": "q", "pos": ["a"], "neg": [], "pos_scores": [True], "neg_scores": []}, "wrong_type"),
        ({"query": "q", "pos": ["a"], "neg": [], "pos_scores": 3.0, "neg_scores": []}, "wrong_type"),
        ({"query": "q", "pos": ["a"], "neg": [], "pos_scores": [math.inf], "neg_scores": []}, "wrong_type"),
        ({"query": "q", "pos": ["a"], "neg": [], "pos_scores": [1e39], "neg_scores": []}, "wrong_type"),  # float32: inf
    ],
)
def test_scores_that_do_not_fit_their_texts_are_dead_letters(line, reason):
    (letter,) = _parse(line)
    assert letter.reason == reason


def test_a_negative_cleaned_away_takes_its_score_with_it():
    record = new_pair("retrieval", "query", "passage", negatives=["one", "\u200b", "three"], teacher_scores=[5, 1, 2, 3])
    assert clean_pair(record, CleanOptions()) is None
    assert record["negatives"] == ["one", "three"] and record[TEACHER_SCORES] == [5, 1, 3]


def test_scores_are_split_back_per_row_whatever_the_calls():
    records = [{"query": f"q{i}", "passage": f"p{i}", "negatives": [f"n{i}"] * i} for i in range(4)]
    calls = []

    def score(queries, texts):
        calls.append(len(queries))
        return [float(len(text) + int(query[1:])) for query, text in zip(queries, texts)]

    for size in (1, 3, 100):
        calls.clear()
        assert teacher.score_rows(score, records, size) == [[2.0], [3.0, 3.0], [4.0, 4.0, 4.0], [5.0] * 4]
        assert max(calls) <= size and sum(calls) == 10
    with pytest.raises(teacher.TeacherOutputError, match="one each"):
        teacher.score_rows(lambda queries, texts: [0.0], records, 100)


# --- the pipeline -----------------------------------------------------------------------------------


def test_teacher_run_scores_every_pair_with_the_cross_encoders_logits(finetune_run, cross_encoder, tmp_path, capfd):
    output = tmp_path / "scored"
    assert _teacher(finetune_run, output, str(cross_encoder)) == 0
    assert "Loading weights" not in capfd.readouterr().err  # transformers' bars, drawn by a worker
    manifest = Manifest.model_validate_json((output / "manifest.json").read_text())
    weights = (cross_encoder / "model.safetensors").read_bytes()
    expected_hash = hashlib.sha256(b"model.safetensors\0" + weights).hexdigest()
    assert manifest.teacher.name == cross_encoder.name and manifest.teacher.weights_sha256 == expected_hash
    assert manifest.teacher.hashed_files == ["model.safetensors"] and manifest.parent.path == str(finetune_run)
    assert manifest.options["derived_by"] == "teacher" and manifest.schema_[TEACHER_SCORES] == "list<item: float>"

    before, after = _rows(finetune_run), _rows(output)
    assert [{**row, TEACHER_SCORES: None} for row in after] == [{**row, TEACHER_SCORES: None} for row in before]
    model = CrossEncoder(str(cross_encoder), device="cpu")
    for row in after:
        group = [row["passage"], *row["negatives"]]
        direct = model.predict([(row["query"], text) for text in group], activation_fn=torch.nn.Identity())
        np.testing.assert_allclose(row[TEACHER_SCORES], direct, rtol=1e-4, atol=1e-6)
    # The BGE sample's own scores were replaced by the teacher's: one teacher per run.
    assert any(row[TEACHER_SCORES] for row in before if row["source"] == "retrieval")
    assert beam_runner.main(["inspect", "verify", str(output)]) == 0
    summary = format_summary(manifest, str(output))
    assert f"teacher_scores by {cross_encoder.name}, weights sha256 {expected_hash[:16]}" in summary.splitlines()[2]


def test_teacher_shards_do_not_depend_on_the_worker_count(finetune_run, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert _teacher(finetune_run, one, f"{CALLABLES}:label_teacher", "--batch-size=16") == 0
    assert _teacher(
        finetune_run, two, f"{CALLABLES}:label_teacher", "--batch-size=16",
        "--direct_num_workers=2", "--direct_running_mode=multi_threading",
    ) == 0  # fmt: skip
    assert _shard_hashes(one) == _shard_hashes(two)
    manifest = Manifest.model_validate_json((one / "manifest.json").read_text())
    assert manifest.teacher.name == "tests.test_teacher:label_teacher"
    assert manifest.teacher.weights_sha256 == hashlib.sha256(b"test_teacher.py\0" + Path(__file__).read_bytes()).hexdigest()
    for row in _rows(one):
        assert row[TEACHER_SCORES] == pytest.approx([len(text) / 100 for text in [row["passage"], *row["negatives"]]])


def test_rows_the_teacher_cannot_score_are_dropped_and_counted(finetune_run, tmp_path):
    output = tmp_path / "nan"
    assert _teacher(finetune_run, output, f"{CALLABLES}:nan_for_german") == 0
    manifest = Manifest.model_validate_json((output / "manifest.json").read_text())
    dropped = manifest.totals.dropped["nonfinite_teacher_score"]
    assert dropped >= 1 and manifest.totals.input == manifest.totals.output + dropped
    assert all("Pflanzen" not in row["query"] for row in _rows(output))
    rejected = (output / "rejected" / "nonfinite_teacher_score.jsonl").read_text()
    assert "Pflanzen" in rejected


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (f"{CALLABLES}:two_scores_per_pair", "scores of shape (2, 2) for 2 pairs, not one each"),
        (f"{CALLABLES}:words_not_scores", "the teacher gave list, not numbers"),
    ],
)
def test_a_teacher_that_breaks_its_contract_stops_the_run_in_one_line(finetune_run, tmp_path, model, message):
    with pytest.raises(SystemExit) as stopped:
        _teacher(finetune_run, tmp_path / "out", model, "--batch-size=1", "--encode-batch-size=2")
    assert message in str(stopped.value) and "\n" not in str(stopped.value)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_teacher_options_are_checked_before_any_work(finetune_run, cross_encoder, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((cross_encoder / "config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded")
    cases = [
        ([f"--input={finetune_run}"], "--pipeline teacher needs --input DIR (a finished run) and --model SPEC"),
        ([f"--input={finetune_run}", f"--model={pickled}"], "holds no *.safetensors weights"),
        ([f"--input={finetune_run}", "--model=nobody/no-such-cross-encoder"], "the hub has none to give"),
        ([f"--input={finetune_run}", f"--model={cross_encoder / 'config.json'}"], "a teacher checkpoint is a directory"),
        ([f"--input={tmp_path}", f"--model={cross_encoder}"], "holds no manifest.json"),
        ([f"--input={finetune_run}", f"--model={CALLABLES}:no_such_teacher"], "has no callable no_such_teacher"),
    ]
    for arguments, message in cases:
        with pytest.raises(SystemExit) as stopped:
            beam_runner.main(["--pipeline=teacher", f"--output={tmp_path / 'out'}", *arguments])
        assert message in str(stopped.value) and "\n" not in str(stopped.value), arguments
        assert not (tmp_path / "out").exists()


def test_a_cross_encoder_scores_the_window_for_the_false_negative_filters(finetune_run, tmp_path):
    def mine(name, *filters):
        output = tmp_path / name
        assert beam_runner.main(
            ["--pipeline=hardnegatives", f"--input={finetune_run}", f"--output={output}", "--rank-window=1:6",
             "--num-negatives=6", "--model=python:tests.test_consistency:trigram_vectors", *filters]
        ) == 0  # fmt: skip
        return {row["id"]: row for row in _rows(output)}, Manifest.model_validate_json((output / "manifest.json").read_text())

    plain, plain_manifest = mine("plain")
    # The filters compare the scores as the float32 a model gives: 200 characters score float32(0.2) > 0.2.
    score = lambda text: float(np.float32(min(1.0, len(text) / 1000)))  # noqa: E731
    ceiling, manifest = mine("ceiling", f"--cross-encoder={CALLABLES}:length_probability", "--max-score=0.2")
    # The window's candidates scoring above 0.2 (from 200 characters) are skipped; the ranks are the encoder's.
    for row_id, row in ceiling.items():
        assert row["negatives"] == [text for text in plain[row_id]["negatives"] if score(text) <= 0.2]
    skipped = sum(len(row["negatives"]) for row in plain.values()) - sum(len(row["negatives"]) for row in ceiling.values())
    counted = Counter()
    for source in manifest.sources.values():
        counted.update(source.skipped_negatives)
    assert skipped > 0 and counted == {"above_max_score": skipped}
    recorded = Teacher.model_validate(manifest.options["cross_encoder"])  # as a teacher run records its teacher
    assert recorded.model == f"{CALLABLES}:length_probability" and recorded.hashed_files == ["test_teacher.py"]
    assert recorded.weights_sha256 == hashlib.sha256(b"test_teacher.py\0" + Path(__file__).read_bytes()).hexdigest()
    assert plain_manifest.options["cross_encoder"] is None

    margin, _ = mine("margin", f"--cross-encoder={CALLABLES}:length_probability", "--relative-margin=0.5")
    for row_id, row in margin.items():
        kept = [text for text in plain[row_id]["negatives"] if score(text) <= (1 - 0.5) * score(row["passage"])]
        assert row["negatives"] == kept


def test_the_cross_encoder_option_belongs_to_hardnegatives_filters(finetune_run, tmp_path):
    with pytest.raises(SystemExit) as stopped:
        _teacher(finetune_run, tmp_path / "out", f"{CALLABLES}:label_teacher", f"--cross-encoder={CALLABLES}:label_teacher")
    assert str(stopped.value) == "--cross-encoder is an option of --pipeline hardnegatives"
    mine = ["--pipeline=hardnegatives", f"--input={finetune_run}", f"--output={tmp_path / 'out'}",
            "--model=python:tests.test_consistency:trigram_vectors", f"--cross-encoder={CALLABLES}:nan_for_long_texts"]
    with pytest.raises(SystemExit) as stopped:
        beam_runner.main(mine)
    assert str(stopped.value) == "--cross-encoder scores for --max-score and --relative-margin: give either"
    # A NaN would compare false with every threshold and switch the filter off unseen: the run stops instead.
    with pytest.raises(SystemExit) as stopped:
        beam_runner.main([*mine, "--max-score=0.5"])
    assert "the cross-encoder scored" in str(stopped.value) and "NaN or infinite" in str(stopped.value)
    assert "\n" not in str(stopped.value) and not (tmp_path / "out" / "manifest.json").exists()


def test_scores_survive_a_consistency_filter_and_a_split(finetune_run, tmp_path):
    scored, ranked = tmp_path / "scored", tmp_path / "ranked"
    assert _teacher(finetune_run, scored, f"{CALLABLES}:tensor_with_its_graph") == 0
    assert beam_runner.main(["--pipeline=consistency", f"--input={scored}", f"--output={ranked}", "--top-k=1000",
                             "--model=python:tests.test_consistency:trigram_vectors"]) == 0  # fmt: skip
    teacher_of = lambda run: Manifest.model_validate_json((run / "manifest.json").read_text()).teacher  # noqa: E731
    assert teacher_of(ranked) == teacher_of(scored) and teacher_of(scored).name.endswith(":tensor_with_its_graph")
    assert all(row[TEACHER_SCORES] == [2.0] * (1 + len(row["negatives"])) for row in _rows(ranked))
    split_output(str(ranked), str(tmp_path / "train"), str(tmp_path / "heldout"), 0.3, 0)
    assert teacher_of(tmp_path / "train") == teacher_of(scored) and (tmp_path / "heldout" / "README.md").exists()


# --- end to end ---------------------------------------------------------------------------------------


def test_every_kind_mined_given_hard_negatives_teacher_scored_and_distilled(finetune_run, cross_encoder, tmp_path):
    negatives, scored, model = tmp_path / "negatives", tmp_path / "scored", tmp_path / "model"
    assert beam_runner.main(
        ["--pipeline=hardnegatives", f"--input={finetune_run}", f"--output={negatives}",
         "--model=python:tests.test_consistency:trigram_vectors", "--rank-window=1:4", "--num-negatives=3"]
    ) == 0  # fmt: skip
    # Mined negatives replace the BGE sample's, so its scores (of the old ones) are gone.
    assert any(row[TEACHER_SCORES] for row in _rows(finetune_run))
    assert all(row[TEACHER_SCORES] is None and len(row["negatives"]) == 3 for row in _rows(negatives))
    assert _teacher(negatives, scored, str(cross_encoder)) == 0
    rows = _rows(scored)
    assert {row["source"] for row in rows} == set(Manifest.model_validate_json((finetune_run / "manifest.json").read_text()).sources)
    assert all(len(row[TEACHER_SCORES]) == 4 for row in rows)
    training_main(
        [
            "finetune", "--data", str(scored), "--model", "tiny", "--output", str(model), "--batch-size", "16",
            "--max-steps", "3", "--negatives", "3", "--max-query-length", "32", "--max-passage-length", "48",
            "--num-workers", "0", "--log-every", "1", "--no-progress", "--distill-weight", "1.0",
        ]
    )  # fmt: skip
    logged = [json.loads(line) for line in (model / "metrics.jsonl").read_text().splitlines()]
    trained = [record for record in logged if "loss" in record]
    assert [record["step"] for record in trained] == [1, 2, 3]
    # Every row was scored, so every row of every batch (one source's, up to 16 rows) was distilled.
    assert all(0 < record["distilled_rows"] <= 16 for record in trained), trained
    # The checkpoint's card says what it learned from, and how.
    card = (model / "README.md").read_text()
    digest = hashlib.sha256((scored / "manifest.json").read_bytes()).hexdigest()
    assert f"| `{scored}` | `{digest}` |" in card and "distilled from teacher scores with weight 1.0" in card
    assert "passages of up to 48 tokens" in card and f"| retrieval | {sum(r['source'] == 'retrieval' for r in rows)} |" in card
    assert SentenceTransformer(str(model)).model_card_data is not None


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine with CUDA can run it")
@pytest.mark.parametrize("pipeline", ["teacher", "hardnegatives", "consistency"])
def test_a_local_run_on_cuda_without_cuda_is_one_line_before_any_work(finetune_run, tmp_path, pipeline):
    with pytest.raises(SystemExit) as stopped:
        beam_runner.main([f"--pipeline={pipeline}", f"--input={finetune_run}", f"--model={CALLABLES}:label_teacher",
                          "--device=cuda", f"--output={tmp_path / 'out'}"])
    assert str(stopped.value) == "--device cuda: this machine has no CUDA device for a local run's workers"
    assert not (tmp_path / "out").exists()
