"""The one SQuAD parser and the one qrels parser that mining, decontamination and evaluation share,
and the field checks every reader goes through."""

import io
import json
from pathlib import Path

import pytest

import beam_runner
from mining.decontaminate import excluded_texts
from mining.formats import MalformedPart, SquadParagraph, parse_qrel, squad_paragraphs, squad_question
from mining.sources.base import Malformed, require_integer, require_list, require_object
from training.evaluation import EvaluationDataError, beir_set, squad_set

_SBERT_SAMPLES = Path(__file__).parent.parent / "mining" / "samples" / "sbert"
_BAD_QUESTION = {"data": [{"paragraphs": [
    {"context": "Der Rhein fließt durch Köln.", "qas": [{"question": "Wo?"}]},
    {"context": "Die Elbe fließt durch Dresden.", "qas": [{"question": "Wo?"}, {"question": ["Wohin?"]}]},
]}]}


def test_squad_paragraphs_go_on_past_a_malformed_part_with_its_place():
    document = {"data": [
        {"paragraphs": [{"context": "c0", "qas": []}, {"context": 7, "qas": []}]},
        "not an article",
        {"paragraphs": [{"context": "c2", "qas": [{"question": "q", "is_impossible": True}]}]},
    ]}
    parts = list(squad_paragraphs(json.dumps(document).encode()))
    assert [type(part) for part in parts] == [SquadParagraph, MalformedPart, MalformedPart, SquadParagraph]
    assert parts[1].error.detail == "data[0].paragraphs[1]: 'context' is int, not a string"
    assert parts[2].error.reason == "wrong_type" and parts[2].value == "not an article"
    assert parts[3].question_where(0) == "data[2].paragraphs[0].qas[0]"
    assert squad_question(parts[3].questions[0], "here").answerable is False
    with pytest.raises(Malformed, match="document: 'data' missing"):
        squad_paragraphs(b'{"rows": []}')


def test_benchmarks_read_whole_name_the_malformed_question(tmp_path):
    path = tmp_path / "xquad.de.json"
    path.write_text(json.dumps(_BAD_QUESTION), "utf-8")
    where = r"data\[0\]\.paragraphs\[1\]\.qas\[1\]: 'question' is list, not a string"
    with pytest.raises(EvaluationDataError, match=where):
        squad_set(str(path))
    with pytest.raises(ValueError, match=where):
        list(excluded_texts(str(path), io.BytesIO(path.read_bytes())))
    with pytest.raises(SystemExit, match=f"^the run stopped, nothing was published: .*{where}") as failure:
        beam_runner.main([f"--source=sbert={_SBERT_SAMPLES}/*", f"--exclude={path}", f"--output={tmp_path / 'out'}"])
    assert "\n" not in str(failure.value.code) and not (tmp_path / "out" / "manifest.json").exists()


def test_qrels_lines_of_trec_and_beir():
    assert parse_qrel("q1 Q0 d1 2") == ("q1", "d1", 2)
    assert parse_qrel("q1\td1\t0\n") == ("q1", "d1", 0)
    assert parse_qrel("q1 d1") == ("q1", "d1", 1)
    for line in ("query-id\tcorpus-id\tscore", "a b c d e", ""):
        with pytest.raises(Malformed):
            parse_qrel(line)


def test_beir_set_skips_the_qrels_header(tmp_path):
    (tmp_path / "queries.tsv").write_text("q1\tquestion one\n")
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "text": "one"}\n')
    assert beir_set(str(tmp_path)).relevant == [{0: 1}]


def test_field_checks_name_the_field_and_where_it_is():
    assert require_integer({}, "score", default=1) == 1 and require_integer({"score": -3}, "score") == -3
    for value, reason, detail in (
        (True, "wrong_type", "'score' is bool, not int"), (None, "missing_field", "'score' missing")
    ):
        with pytest.raises(Malformed) as raised:
            require_integer({"score": value}, "score", default=1)
        assert (raised.value.reason, raised.value.detail) == (reason, detail)
    with pytest.raises(Malformed, match=r"^wrong_type: data\[1\]: 'qas' is str, not a list$"):
        require_list({"qas": "q"}, "qas", "data[1]")
    with pytest.raises(Malformed, match=r"^wrong_type: expected a JSON object, got list$"):
        require_object([])


@pytest.mark.parametrize("name, text, refusal", [
    ("topics.tsv", "q1\tquestion one\nno tab here\n", r"topics\.tsv:2: expected qid<TAB>query"),
    ("corpus.jsonl", '{"_id": "d1", "text": "one"}\n{"_id": "d2"}\n', r"corpus\.jsonl:2: 'text' missing"),
    ("queries.jsonl", '{"_id": "q1", "text": "question one"}\n[1]\n', r"queries\.jsonl:2: expected a JSON object"),
])
def test_beir_set_names_the_line_it_cannot_read(tmp_path, name, text, refusal):
    (tmp_path / "qrels.tsv").write_text("q1\td1\t1\n")
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "text": "one"}\n')
    (tmp_path / name).write_text(text)
    with pytest.raises(EvaluationDataError, match=refusal):
        beir_set(str(tmp_path))
