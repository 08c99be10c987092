"""Decontamination against real benchmark files: formats, the 13-gram and equality rules, a whole run."""

import gzip
import io
import json

import pytest

import beam_runner
from mining.decontaminate import ExcludedSet, drop_contaminated, excluded_texts
from mining.records import new_pair
from pipelines import io as beam_io
from schemas.manifest import Manifest
from tests.conftest import SHARED_DATA, write_lines
from schemas.reasons import CONTAMINATED

XQUAD = SHARED_DATA / "xquad"
NGRAM = 13  # words shared with an excluded text, or characters in Chinese


def _texts(path) -> list[str]:
    with beam_io.open_file(str(path)) as stream:
        return list(excluded_texts(str(path), stream))


@pytest.fixture(scope="module")
def squad() -> dict:
    return {code: json.loads((XQUAD / f"xquad.{code}.json").read_text("utf-8")) for code in ("en", "zh")}


@pytest.fixture(scope="module")
def excluded(tatoeba_dir) -> ExcludedSet:
    texts = _texts(XQUAD / "xquad.en.json") + _texts(XQUAD / "xquad.zh.json")
    return ExcludedSet.of(texts + _texts(tatoeba_dir / "tatoeba.fra-eng.fra"))


def test_benchmark_formats(tatoeba_dir, tmp_path):
    english = _texts(XQUAD / "xquad.en.json")
    assert len(english) == 240 + 1190 and english[1] == "How many points did the Panthers defense surrender?"
    assert len(_texts(tatoeba_dir / "tatoeba.fra-eng.fra")) == 1000
    topics = tmp_path / "topics.miracl-v1.0-sw-dev.tsv.gz"
    topics.write_bytes(gzip.compress(b"0#0\tJe, kuna nchi ngapi?\n1#1\tMlima mrefu zaidi?\n\n"))
    assert _texts(topics) == ["Je, kuna nchi ngapi?", "Mlima mrefu zaidi?"]
    with pytest.raises(ValueError, match="not SQuAD"):
        list(excluded_texts("other.json", io.BytesIO(b'{"rows": []}')))


def _pair(query: str, passage: str) -> dict:
    record = new_pair("sbert", query, passage)
    record["id"] = f"{query}|{passage}"
    return record


def _verdicts(records, excluded):
    kept, drops = drop_contaminated(records, excluded)
    assert len(kept) + len(drops) == len(records) and all(drop.reason == CONTAMINATED for drop in drops)
    return {drop.record["id"]: drop.detail for drop in drops}


def test_thirteen_shared_words_or_an_equal_text_contaminate(squad, excluded):
    context = squad["en"]["data"][0]["paragraphs"][0]["context"]
    words = context.split()[10:40]
    leaking = _pair("What happened?", "Xyzzy: " + " ".join(words[:NGRAM]).upper() + " -- plugh.")
    almost = _pair("What happened?", "Xyzzy: " + " ".join(words[:NGRAM - 1]) + " plugh.")
    question = _pair("how many points did the panthers DEFENSE surrender", "A passage of our own about football.")
    verdicts = _verdicts([leaking, almost, question], excluded)
    assert set(verdicts) == {leaking["id"], question["id"]}
    shared = " ".join(words[:NGRAM]).lower().replace(",", "")
    assert verdicts[leaking["id"]] == f'passage shares "{shared}" with an excluded text'
    assert verdicts[question["id"]] == "query equals an excluded text"


def test_a_tatoeba_sentence_is_excluded_whole_not_inside_a_passage(tatoeba_dir, excluded):
    sentence = (tatoeba_dir / "tatoeba.fra-eng.fra").read_text("utf-8").splitlines()[0]
    equal = _pair("Une question ?", f"  {sentence.upper()}  ")
    inside = _pair("Une question ?", f"Il a dit : {sentence}")
    assert _verdicts([equal, inside], excluded) == {equal["id"]: "passage equals an excluded text"}


def test_characters_count_as_words_in_chinese(squad, excluded):
    context = squad["zh"]["data"][0]["paragraphs"][0]["context"]
    start = next(i for i in range(len(context)) if all("\u4e00" <= c <= "\u9fff" for c in context[i : i + 14]))
    leaking = _pair("发生了什么？", "据报道，" + context[start : start + NGRAM] + "。")
    almost = _pair("发生了什么？", "据报道，" + context[start : start + NGRAM - 1] + "。")
    spaced = _pair("发生了什么？", " ".join(context[start : start + NGRAM]))
    assert set(_verdicts([leaking, almost, spaced], excluded)) == {leaking["id"], spaced["id"]}


def test_union_of_parts_is_the_whole(tatoeba_dir):
    texts = _texts(XQUAD / "xquad.en.json")
    whole = ExcludedSet.of(texts)
    parts = ExcludedSet.of(texts[:500]).union(ExcludedSet.of(texts[500:900]), ExcludedSet.of(texts[900:]))
    assert (parts.ngrams.tolist(), parts.texts.tolist()) == (whole.ngrams.tolist(), whole.texts.tolist())
    assert len(ExcludedSet.empty()) == 0 and drop_contaminated([_pair("a", "b")], ExcludedSet.empty())[1] == []


def test_a_run_with_exclusions(squad, tatoeba_dir, tmp_path):
    english = [p for article in squad["en"]["data"] for p in article["paragraphs"]]
    leaks = [
        [english[0]["qas"][0]["question"], "Our own answer: the defence conceded three hundred and eight points."],
        ["What is this about?", "Quote: " + english[5]["context"][:400]],
        ["Tell me about Tesla.", english[100]["context"].replace(".", " !")],
    ]
    clean = [
        ["How long is the river Thames?", "The Thames flows for 346 kilometres from the Cotswolds to the North Sea."],
        ["What do pandas eat?", "Giant pandas feed almost entirely on bamboo, eating for up to fourteen hours a day."],
    ]
    write_lines(tmp_path / "in" / "qa.jsonl", leaks + clean)
    output = tmp_path / "out"
    args = [
        f"--source=sbert:en={tmp_path}/in/*", f"--output={output}",
        f"--exclude={XQUAD}/xquad.*.json", f"--exclude={tatoeba_dir}/tatoeba.fra-eng.*",
    ]
    assert beam_runner.main(args) == 0
    manifest = Manifest.model_validate_json((output / "manifest.json").read_text("utf-8"))
    assert manifest.totals.dropped == {CONTAMINATED: len(leaks)} and manifest.totals.output == len(clean)
    assert manifest.options["exclude"] == [f"{XQUAD}/xquad.*.json", f"{tatoeba_dir}/tatoeba.fra-eng.*"]
    rejected = [json.loads(line) for line in (output / "rejected" / f"{CONTAMINATED}.jsonl").open()]
    assert sorted(row["query"] for row in rejected) == sorted(query for query, _ in leaks)


def test_an_exclusion_that_matches_nothing_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="no-such-benchmark"):
        beam_runner.main([f"--output={tmp_path}", f"--exclude={tmp_path}/no-such-benchmark/*.json"])
