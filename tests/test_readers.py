"""Every source kind on small fixtures in its real published format, awkward cases included.

Joins run here in plain Python, grouped by key as the Beam shuffle groups them;
tests/test_pipeline.py runs the same readers on the engine.
"""

import gzip
import json
from collections import defaultdict

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from mining.records import DeadLetter, Drop
from mining.sources import ReadLimits, ReadTask, SourceSpec, get_reader
from mining.sources.base import JoinPart
from mining.sources.wikipedia import PASSAGE_CHARS
from pipelines.io import match_files, open_file
from tests.conftest import write_lines
from schemas.reasons import READER_ERROR


def mine(spec_text: str):
    """(pairs, drops, dead letters) of one --source, joins included."""
    spec = SourceSpec.parse(spec_text)
    reader = get_reader(spec.kind)
    items = [item for task in reader.plan(spec, match_files) for item in reader.read(task, open_file, ReadLimits())]
    for round_index in range(reader.join_rounds):
        groups, later = defaultdict(list), []
        for item in items:
            if isinstance(item, JoinPart):
                (groups[item.key] if item.round == round_index else later).append(item)
        done = [item for item in items if not isinstance(item, JoinPart)]
        items = done + later + [out for key in sorted(groups) for out in reader.join(round_index, key, groups[key])]
    assert not any(isinstance(item, JoinPart) for item in items)
    pairs = [item for item in items if isinstance(item, dict)]
    drops = [item for item in items if isinstance(item, Drop)]
    letters = [item for item in items if isinstance(item, DeadLetter)]
    return pairs, drops, letters


def reasons(drops):
    return sorted(drop.reason for drop in drops)


def test_wikipedia_sections_chunks_and_parquet(tmp_path):
    history = " ".join(f"Die Stadt wuchs im {i}. Jahrhundert weiter und baute neue Mauern." for i in range(60))
    rows = [
        {"id": "1", "url": "u", "title": "Berlin",
         "text": f"Berlin ist die Hauptstadt.\n\nGeschichte\n\n{history}\n\nGeografie\n\nBerlin liegt an der Spree."},
        {"id": "2", "url": "u", "title": "Leer", "text": ""},
    ]
    write_lines(tmp_path / "de.jsonl", rows)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "de.parquet")
    for pattern in ("de.jsonl", "de.parquet"):
        pairs, drops, letters = mine(f"wikipedia:de={tmp_path}/{pattern}")
        queries = [pair["query"] for pair in pairs]
        assert queries[0] == "Berlin" and queries[-2] == "Berlin: Geografie" and queries[-1] == "Leer"
        history_passages = [pair["passage"] for pair in pairs if pair["query"] == "Berlin: Geschichte"]
        assert len(history_passages) >= 3 and all(len(p) <= PASSAGE_CHARS for p in history_passages)
        assert " ".join(history_passages) == history
        assert pairs[-1]["passage"] == "" and not drops and not letters


def test_mc4_takes_a_heading_first_line_as_title(tmp_path):
    path = tmp_path / "c4-fr.json.gz"
    write_lines(path, [
        {"text": "Recette de la tarte aux pommes\nPréchauffez le four. Coupez les pommes.", "url": "u", "timestamp": "t"},
        {"text": "Il fait beau aujourd'hui.\nNous irons au parc.", "url": "u", "timestamp": "t"},
        {"text": "Une seule ligne sans suite", "url": "u", "timestamp": "t"},
        {"url": "u"},
    ], compress=True)
    pairs, drops, letters = mine(f"mc4={path}")
    assert [(p["query"], p["passage"]) for p in pairs] == [
        ("Recette de la tarte aux pommes", "Préchauffez le four. Coupez les pommes.")
    ]
    assert reasons(drops) == ["no_title", "no_title"]
    assert [letter.reason for letter in letters] == ["missing_field"]


def _zst_lines(rows) -> bytes:
    return zstandard.ZstdCompressor().compress("".join(json.dumps(row) + "\n" for row in rows).encode())


def test_reddit_pairs_replies_with_parents_by_e5_rules(tmp_path):
    comment = dict(link_id="t3_s1", author="a", subreddit="de", created_utc=1)
    comments = [
        {**comment, "id": "c1", "parent_id": "t3_s1", "body": "Erster Kommentar zum Beitrag.", "score": 3},
        {**comment, "id": "c2", "parent_id": "t1_c1", "body": "Eine Antwort auf den ersten.", "score": 2},
        {**comment, "id": "c3", "parent_id": "t1_c1", "body": "[removed]", "score": 5},
        {**comment, "id": "c4", "parent_id": "t1_c3", "body": "Antwort auf Gelöschtes.", "score": 4},
        {**comment, "id": "c5", "parent_id": "t1_c1", "body": "Schlecht bewertet.", "score": 0},
        {**comment, "id": "c6", "parent_id": "t1_gone", "body": "Elternteil fehlt.", "score": 1},
        {**comment, "id": "c7", "parent_id": "t1_c1", "body": "x" * 5000, "score": 9},
        {**comment, "id": "c8", "parent_id": "t3_other", "body": "Ohne Beitrag.", "score": 1},
        {**comment, "id": "c9", "parent_id": "t1_c2", "body": "Noch eine Ebene tiefer.", "score": "many"},
    ]
    (tmp_path / "RC_2019-04.zst").write_bytes(_zst_lines(comments))
    write_lines(tmp_path / "RS_2019-04.jsonl", [
        {"id": "s1", "title": "Ein Beitrag", "selftext": "", "score": 10, "author": "b", "subreddit": "de"},
    ])
    pairs, drops, letters = mine(f"reddit:de={tmp_path}/R*")
    assert sorted((p["query"], p["passage"]) for p in pairs) == [
        ("Ein Beitrag", "Erster Kommentar zum Beitrag."),
        ("Erster Kommentar zum Beitrag.", "Eine Antwort auf den ersten."),
    ]
    assert reasons(drops) == ["body_too_long", "deleted", "low_score", "parent_filtered", "parent_missing", "parent_missing"]
    assert [letter.reason for letter in letters] == ["wrong_type"]


def test_reddit_submission_with_a_non_string_selftext_is_a_dead_letter(tmp_path):
    write_lines(tmp_path / "RS_1.jsonl", [{"id": "p1", "title": "t", "selftext": 5}, {"id": "p2", "title": "ok"}])
    pairs, drops, letters = mine(f"reddit={tmp_path}/RS_1.jsonl")
    assert not pairs and not drops
    assert [(letter.reason, letter.line, letter.payload) for letter in letters] == [
        ("wrong_type", 1, '{"id": "p1", "title": "t", "selftext": 5}')
    ]


def test_squad_entries_nested_past_what_str_can_show_are_dead_letters(tmp_path):
    deep = "[" * 1000 + "]" * 1000
    (tmp_path / "squad.json").write_text(
        '{"data": [{"paragraphs": [{"context": "Paris is in France.", "qas": [' + deep
        + ', {"question": "Where is Paris?"}]}]}, ' + deep + "]}", "utf-8"
    )
    pairs, drops, letters = mine(f"squad={tmp_path}/squad.json")
    assert [pair["query"] for pair in pairs] == ["Where is Paris?"] and not drops
    assert [(letter.reason, letter.payload[:4]) for letter in letters] == [("wrong_type", "[[[["), ("wrong_type", "[[[[")]


def test_an_exception_no_rule_foresaw_is_a_dead_letter_not_the_end(tmp_path):
    """The backstops: a task a reader cannot read, a join that raises, a payload str() cannot show."""
    reader = get_reader("msmarco")
    path = write_lines(tmp_path / "passages.tsv", [b"1\tno role in the name"])
    (letter,) = reader.read_all(ReadTask("msmarco", (str(path),), None), open_file, ReadLimits())
    assert (letter.reason, letter.file) == (READER_ERROR, str(path)) and letter.detail.startswith("ValueError: ")

    reddit = get_reader("reddit")
    parts = [JoinPart("t1_c1", "reply", {"origin": "RC_1:7"}), JoinPart("t1_c1", "parent", {"origin": "RC_1:3"})]
    (letter,) = reddit.join_items(0, "t1_c1", parts)
    assert (letter.reason, letter.file, letter.line) == (READER_ERROR, "RC_1", None)
    assert letter.detail.startswith("KeyError: ") and "RC_1:7" in letter.payload

    nested = []
    for _ in range(1020):
        nested = [nested, "\ud800"]
    letter = reader.dead_letter(READER_ERROR, "deep \ud800", "f", 1, nested)
    assert letter.payload.startswith("[[[[") and "\ud800" not in letter.payload + letter.detail
    json.dumps(letter.to_dict(), ensure_ascii=False).encode("utf-8")


POSTS = """<?xml version="1.0" encoding="utf-8"?>
<posts>
  <row Id="1" PostTypeId="1" AcceptedAnswerId="3" Score="5" Title="How to join lists?" Body="&lt;p&gt;I have &lt;code&gt;a &amp;amp; b&lt;/code&gt;&#x2014;how?&lt;/p&gt;" />
  <row Id="2" PostTypeId="2" ParentId="1" Score="9" Body="&lt;p&gt;Use extend.&lt;/p&gt;" />
  <row Id="3" PostTypeId="2" ParentId="1" Score="1" Body="&lt;p&gt;Use &lt;b&gt;plus&lt;/b&gt;.&lt;/p&gt;" />
  <row Id="4" PostTypeId="1" Score="2" Title="Unanswered question here" Body="&lt;p&gt;Nobody knows.&lt;/p&gt;" />
  <row Id="5" PostTypeId="1" Score="2" Title="Best by score" Body="&lt;p&gt;Which one?&lt;/p&gt;" />
  <row Id="6" PostTypeId="2" ParentId="5" Score="3" Body="&lt;p&gt;Three points.&lt;/p&gt;" />
  <row Id="7" PostTypeId="2" ParentId="5" Score="8" Body="&lt;p&gt;Eight points.&lt;/p&gt;" />
  <row Id="8" PostTypeId="1" Score="0" Title="Only bad answers" Body="&lt;p&gt;Hm.&lt;/p&gt;" />
  <row Id="9" PostTypeId="2" ParentId="8" Score="0" Body="&lt;p&gt;Zero.&lt;/p&gt;" />
  <row Id="10" PostTypeId="2" ParentId="99" Score="4" Body="&lt;p&gt;Orphan.&lt;/p&gt;" />
  <row Id="11" PostTypeId="4" Body="tag wiki" />
  <row PostTypeId="1" Title="No id" />
</posts>
"""


def test_stackexchange_questions_with_their_best_answer(tmp_path):
    (tmp_path / "en.stackoverflow.com").mkdir()
    path = tmp_path / "en.stackoverflow.com" / "Posts.xml"
    path.write_text(POSTS, "utf-8")
    pairs, drops, letters = mine(f"stackexchange={path}")
    assert [(p["query"], p["passage"], p["_declared_query_lang"]) for p in pairs] == [
        ("How to join lists?\nI have a & b—how?", "Use plus.", "en"),
        ("Best by score\nWhich one?", "Eight points.", "en"),
    ]
    assert reasons(drops) == ["no_answer", "no_good_answer"]
    assert [letter.reason for letter in letters] == ["missing_field"]


def test_stackexchange_broken_xml_keeps_rows_before_the_damage(tmp_path):
    path = tmp_path / "Posts.xml.gz"
    path.write_bytes(gzip.compress(POSTS.encode()[:700]))
    pairs, _, letters = mine(f"stackexchange:en={path}")
    assert [letter.reason for letter in letters] == ["unreadable_file"]
    assert len(pairs) == 1


def test_s2orc_and_xp3(tmp_path):
    write_lines(tmp_path / "s2orc.jsonl", [
        {"paper_id": "1", "title": "Attention", "abstract": "We propose a network."},
        {"paper_id": "2", "title": "Old", "paperAbstract": "Earlier field name."},
        {"paper_id": "3", "title": "No abstract", "abstract": None},
        {"paper_id": "4", "title": 5, "abstract": "x"},
    ])
    pairs, _, letters = mine(f"s2orc={tmp_path}/s2orc.jsonl")
    assert [(p["query"], p["passage"]) for p in pairs] == [
        ("Attention", "We propose a network."), ("Old", "Earlier field name."), ("No abstract", ""),
    ]
    assert [letter.reason for letter in letters] == ["wrong_type"]

    write_lines(tmp_path / "xP3" / "fr" / "xp3_fr.jsonl", [{"inputs": "Traduire: hello", "targets": "Bonjour"}])
    (pair,), _, _ = mine(f"xp3={tmp_path}/xP3/fr/*.jsonl")
    assert (pair["_declared_query_lang"], pair["_declared_passage_lang"], pair["_bilingual"]) == (None, "fr", True)


def test_sbert_dict_forms(tmp_path):
    write_lines(tmp_path / "d.jsonl", [
        {"query": "q", "pos": ["p1", "p2"], "neg": ["n1"]},
        {"set": ["a", "b", "c"]},
        {"set": ["alone"]},
        {"query": "q", "pos": "not a list"},
    ])
    pairs, _, letters = mine(f"sbert={tmp_path}/d.jsonl")
    assert [(p["query"], p["passage"], p["negatives"]) for p in pairs] == [
        ("q", "p1", ["n1"]), ("q", "p2", ["n1"]), ("a", "b", []), ("b", "c", []),
    ]
    assert [letter.reason for letter in letters] == ["missing_field", "wrong_type"]


def test_squad_v2_drops_unanswerable(tmp_path):
    document = {"version": "v2.0", "data": [{"title": "T", "paragraphs": [
        {"context": "Der Rhein fließt durch Köln.", "qas": [
            {"id": "1", "question": "Wo fließt der Rhein?", "answers": [{"text": "Köln", "answer_start": 23}],
             "is_impossible": False},
            {"id": "2", "question": "Wie tief ist er?", "answers": [], "is_impossible": True},
            {"id": "3", "question": 7, "answers": []},
        ]},
        "not a paragraph",
    ]}]}
    (tmp_path / "squad.json").write_text(json.dumps(document), "utf-8")
    (tmp_path / "broken.json").write_text('{"data": [', "utf-8")
    pairs, drops, letters = mine(f"squad:de={tmp_path}/*.json")
    assert [(p["query"], p["passage"], p["task"]) for p in pairs] == [
        ("Wo fließt der Rhein?", "Der Rhein fließt durch Köln.", get_reader("squad").task)
    ]
    assert reasons(drops) == ["unanswerable"]
    assert sorted(letter.reason for letter in letters) == ["invalid_json", "wrong_type", "wrong_type"]


@pytest.mark.parametrize("code", ["en", "de", "zh", "ar", "hi"])
def test_xquad_questions_all_read(code):
    pairs, drops, letters = mine(f"squad=../shared/data/xquad/xquad.{code}.json")
    assert len(pairs) == 1190 and not drops and not letters


def test_retrieval_prompt_becomes_the_task(tmp_path):
    write_lines(tmp_path / "bge.jsonl", [
        {"query": "q1", "pos": ["p1"], "neg": ["n1", "n2"], "prompt": "Represent this: "},
        {"query": "q2", "pos": ["p2"], "neg": []},
    ])
    pairs, _, _ = mine(f"retrieval={tmp_path}/bge.jsonl")
    assert [(p["task"], p["negatives"]) for p in pairs] == [
        ("Represent this:", ["n1", "n2"]), (get_reader("retrieval").task, []),
    ]


def test_msmarco_relevance_join_and_triples(tmp_path):
    (tmp_path / "collection.tsv").write_text("10\tPassage ten.\n11\tPassage eleven.\n12\tPassage twelve.\n", "utf-8")
    (tmp_path / "queries.train.tsv").write_text("1\tquery one\n2\tquery two\nbroken line\n", "utf-8")
    (tmp_path / "qrels.train.tsv").write_text("1\t0\t10\t1\n1\t0\t11\t1\n2\t0\t99\t1\n3\t0\t12\t1\n", "utf-8")
    (tmp_path / "triples.train.small.tsv").write_text("q\tpos\tneg\nonly\ttwo\n", "utf-8")
    pairs, drops, letters = mine(f"msmarco={tmp_path}/*.tsv")
    assert sorted((p["query"], p["passage"]) for p in pairs) == [
        ("q", "pos"), ("query one", "Passage eleven."), ("query one", "Passage ten."),
    ]
    assert reasons(drops) == ["doc_missing", "query_missing"]
    assert [letter.reason for letter in letters] == ["wrong_type", "wrong_type"]


def test_miracl_judged_negatives_and_namespaced_sources(tmp_path):
    for lang, passage in (("ja", "東京は日本の首都です。"), ("ar", "القاهرة عاصمة مصر.")):
        folder = tmp_path / lang
        folder.mkdir()
        (folder / "topics.tsv").write_text("1\tquestion\n", "utf-8")
        (folder / "qrels.tsv").write_text("1 Q0 d#0 1\n1 Q0 d#1 0\n", "utf-8")
        write_lines(folder / "corpus.jsonl", [
            {"docid": "d#0", "title": "T", "text": passage}, {"docid": "d#1", "title": "", "text": "negative"},
        ])
    for lang in ("ja", "ar"):
        (pair,), drops, letters = mine(f"miracl={tmp_path}/{lang}/*")
        assert pair["passage"].startswith("T\n") and pair["negatives"] == ["negative"]
        assert pair["_declared_query_lang"] == lang and not drops and not letters


def test_nli_entailments_with_contradictions_as_negatives(tmp_path):
    rows = [
        {"gold_label": "entailment", "sentence1": "A man plays guitar.", "sentence2": "A man makes music."},
        {"gold_label": "contradiction", "sentence1": "A man plays guitar.", "sentence2": "A man sleeps."},
        {"gold_label": "neutral", "sentence1": "A man plays guitar.", "sentence2": "A man is famous."},
        {"gold_label": "-", "sentence1": "A man plays guitar.", "sentence2": "Unclear."},
        {"gold_label": "entailment", "sentence1": "Kids run.", "sentence2": "Children move."},
    ]
    write_lines(tmp_path / "snli.jsonl", rows)
    header = "language\tgold_label\tsentence1\tsentence2\tpairID"
    tsv = [header, "fr\tentailment\tUn homme joue.\tUn homme fait de la musique.\t1",
           "fr\tcontradiction\tUn homme joue.\tUn homme dort.\t2", "fr\tbroken"]
    (tmp_path / "xnli.test.tsv").write_text("\n".join(tsv) + "\n", "utf-8")
    pairs, drops, letters = mine(f"nli={tmp_path}/*")
    assert sorted((p["query"], p["passage"], tuple(p["negatives"]), p["_declared_query_lang"]) for p in pairs) == [
        ("A man plays guitar.", "A man makes music.", ("A man sleeps.",), None),
        ("Kids run.", "Children move.", (), None),
        ("Un homme joue.", "Un homme fait de la musique.", ("Un homme dort.",), "fr"),
    ]
    assert not drops and [letter.reason for letter in letters] == ["wrong_type"]


def test_zstd_truncation_is_a_dead_letter(tmp_path):
    data = _zst_lines([{"id": f"c{i}", "parent_id": "t3_x", "body": f"body {i} " * 20, "score": 2} for i in range(5000)])
    (tmp_path / "RC_cut.zst").write_bytes(data[: len(data) // 2])
    _, _, letters = mine(f"reddit={tmp_path}/RC_cut.zst")
    assert [letter.reason for letter in letters] == ["unreadable_file"]


def test_dpr_positives_with_hard_negatives_from_the_bundled_sample():
    pairs, drops, letters = mine("dpr=mining/samples/dpr/biencoder-nq-train.json")
    octopus = [pair for pair in pairs if pair["query"] == "how many hearts does an octopus have"]
    assert [pair["negatives"] for pair in octopus] == [[
        "Squid\nSquid are cephalopods with eight arms and two longer tentacles. Like other cephalopods they have "
        "blue blood that carries oxygen with copper-based haemocyanin.",
        "Cuttlefish\nCuttlefish change the colour and texture of their skin within a fraction of a second using "
        "cells called chromatophores.",
    ]]
    assert octopus[0]["passage"].startswith("Octopus\nAn octopus has three hearts")
    assert len(pairs) == 5 and {pair["task"] for pair in pairs} == {get_reader("dpr").task}
    assert not any("Tide pools" in negative for pair in pairs for negative in pair["negatives"])
    assert reasons(drops) == ["no_positive"]
    assert [(letter.reason, letter.line) for letter in letters] == [("wrong_type", None), ("missing_field", None)]

    pairs, drops, letters = mine("dpr=mining/samples/dpr/biencoder-trivia-train.json")
    assert len(pairs) == 3 and {pair["task"] for pair in pairs} == {"Retrieve Wikipedia passages that answer the question"}
    assert not drops and [letter.reason for letter in letters] == ["wrong_type"]


def test_dpr_array_is_streamed_across_chunks_and_its_damage_ends_only_the_file(tmp_path):
    """Elements straddle the reader's 1 MiB chunks (numbers and literals cut mid-way included); a file
    cut short, an element over the size limit or a file that is no array keeps what came before."""
    rows = [{"question": f"q{i}", "positive_ctxs": [{"title": "", "text": f"p{i}", "score": i * 1.5, "has": True}],
             "hard_negative_ctxs": [], "pad": "x" * (i % 500)} for i in range(12000)]
    text = json.dumps(rows, indent=4)
    (tmp_path / "big.json").write_text(text, "utf-8")
    pairs, drops, letters = mine(f"dpr={tmp_path}/big.json")
    assert [pair["passage"] for pair in pairs] == [f"p{i}" for i in range(12000)] and not drops and not letters

    cut = text[: len(text) // 2]
    (tmp_path / "cut.json").write_text(cut, "utf-8")
    pairs, _, (letter,) = mine(f"dpr={tmp_path}/cut.json")
    assert letter.reason == "truncated_json" and len(pairs) > 5000
    assert [pair["passage"] for pair in pairs] == [f"p{i}" for i in range(len(pairs))]

    (tmp_path / "long.json").write_text(json.dumps([rows[0], {"question": "y" * 5000}, rows[1]]), "utf-8")
    (tmp_path / "endless.json").write_text(json.dumps([rows[0], {"question": "y" * (3 << 20)}, rows[1]]), "utf-8")
    reader = get_reader("dpr")
    for name, queries in (("long.json", ["q0", "q1"]), ("endless.json", ["q0"])):
        task = ReadTask("dpr", (str(tmp_path / name),), None)
        items = list(reader.read(task, open_file, ReadLimits(1000)))
        assert [item["query"] for item in items if isinstance(item, dict)] == queries
        assert [item.reason for item in items if isinstance(item, DeadLetter)] == ["line_too_long"]

    (tmp_path / "object.json").write_text('{"data": []}', "utf-8")
    (tmp_path / "bad.json").write_text('[{"question": "a", "positive_ctxs": []} {"question": "b"}]', "utf-8")
    _, _, letters = mine(f"dpr={tmp_path}/object.json")
    assert [letter.reason for letter in letters] == ["wrong_type"]
    _, drops, letters = mine(f"dpr={tmp_path}/bad.json")
    assert reasons(drops) == ["no_positive"] and [letter.reason for letter in letters] == ["invalid_json"]
    (tmp_path / "nan.json").write_text('[NaN, {"question": "c", "positive_ctxs": []}]', "utf-8")
    _, drops, letters = mine(f"dpr={tmp_path}/nan.json")  # orjson refuses NaN as it does in every other reader
    assert reasons(drops) == ["no_positive"] and [(letter.reason, letter.payload) for letter in letters] == [
        ("invalid_json", "NaN")
    ]


def test_beir_training_splits_join_within_their_dataset_with_its_task():
    pairs, drops, letters = mine("beir=mining/samples/beir/**")
    by_query = defaultdict(list)
    for pair in pairs:
        by_query[pair["query"]].append(pair)
    yenisei = by_query["Into which sea does the river joined by the Angara empty?"]
    assert sorted(pair["passage"].split("\n")[0] for pair in yenisei) == ["Angara River", "Yenisei"]
    assert all(pair["negatives"] == [yenisei[0]["negatives"][0]] for pair in yenisei)
    assert yenisei[0]["negatives"][0].startswith("Kara Sea\n")  # score 0: a negative, not a positive
    # fever's document 1204417 is not hotpotqa's
    (saturn,) = by_query["Saturn is the largest planet in the Solar System."]
    assert saturn["passage"].startswith("Saturn\n")
    tasks = {pair["query"]: pair["task"] for pair in pairs}
    assert tasks["Mount Etna is located on the island of Sicily."] == "Given a claim, retrieve documents that support or refute the claim"
    assert tasks["Which city stands on the only river that flows out of the world's deepest lake?"] == (
        "Given a multi-hop question, retrieve documents that can help answer the question"
    )
    # qrels/test.tsv is the evaluation split: its query has no pair
    assert "Which valley is the setting of a novel by a former chemistry teacher from Wrexham?" not in by_query
    assert len(pairs) == 14 and reasons(drops) == ["doc_missing", "query_missing"]
    assert sorted(letter.reason for letter in letters) == ["invalid_json", "missing_field"]


def test_beir_refuses_files_outside_its_layout(tmp_path):
    write_lines(tmp_path / "nq" / "corpus.jsonl", [{"_id": "doc0", "title": "", "text": "t"}])
    write_lines(tmp_path / "nq" / "train.tsv", [b"query-id\tcorpus-id\tscore"])
    with pytest.raises(ValueError, match="qrels/train.tsv"):
        get_reader("beir").plan(SourceSpec.parse(f"beir={tmp_path}/**"), match_files)


def test_mrtydi_train_split_with_negatives_and_the_folders_language():
    pairs, drops, letters = mine("mrtydi=mining/samples/mrtydi/**")
    assert {(pair["_declared_query_lang"], pair["_declared_passage_lang"]) for pair in pairs} == {("ko", "ko"), ("ru", "ru")}
    (volga,) = [pair for pair in pairs if pair["query"] == "Какая река самая длинная в Европе?"]
    assert volga["passage"].startswith("Волга\nВолга — самая длинная")
    assert [negative.split("\n")[0] for negative in volga["negatives"]] == ["Дунай", "Урал (река)"]
    assert not any(pair["query"] == "부산에서 가장 큰 해수욕장은?" for pair in pairs)  # test.jsonl is not read
    assert len(pairs) == 8 and {pair["task"] for pair in pairs} == {get_reader("mrtydi").task}
    assert reasons(drops) == ["no_positive"]
    assert sorted(letter.reason for letter in letters) == ["invalid_json", "missing_field", "wrong_type"]

    (pair, *_), _, _ = mine("mrtydi:en=mining/samples/mrtydi/mrtydi-v1.1-korean/train.jsonl")
    assert pair["_declared_query_lang"] == "en"  # the --source's language wins
    with pytest.raises(FileNotFoundError, match="train"):
        mine("mrtydi=mining/samples/mrtydi/mrtydi-v1.1-korean/test.jsonl")


def test_quora_duplicates_are_pairs_and_every_row_is_accounted_for():
    path = "mining/samples/quora/quora_duplicate_questions.tsv"
    pairs, drops, letters = mine(f"quora:en={path}")
    assert (pairs[0]["query"], pairs[0]["passage"]) == (
        "How do I keep basil alive indoors?", "What is the best way to grow basil inside the house?"
    )
    assert {pair["task"] for pair in pairs} == {
        "Given a question, retrieve questions that are semantically equivalent to the given question"
    }
    assert reasons(drops) == ["not_duplicate"] * 4
    assert [(letter.reason, letter.line) for letter in letters] == [("wrong_type", 11), ("wrong_type", 12)]
    rows = len(open(path, encoding="utf-8").read().splitlines()) - 1
    assert len(pairs) == 7 and len(pairs) + len(drops) + len(letters) == rows


def test_eli5_question_with_its_highest_scored_answer():
    pairs, drops, letters = mine("eli5:en=mining/samples/eli5/train_eli5.jsonl")
    answers = {pair["query"]: pair["passage"] for pair in pairs}
    assert answers["ELI5: Why does ice float on water?"].startswith("Water molecules line up")
    planes = "ELI5: How do airplanes stay in the air?\nI know it has to do with the wings but I don't get how."
    assert answers[planes].startswith("The wings are shaped")  # 27 points beats 12
    assert answers["ELI5: Why is the sky blue but sunsets are red?"].startswith("Sunlight has all colours")  # first of 33s
    assert len(pairs) == 6 and {pair["task"] for pair in pairs} == {get_reader("eli5").task}
    assert reasons(drops) == ["no_answer"]
    assert [(letter.reason, letter.line) for letter in letters] == [("wrong_type", 4), ("missing_field", 7)]


def test_dureader_lines_of_a_query_join_into_its_positives_with_every_negative(tmp_path):
    pairs, drops, letters = mine("dureader=mining/samples/dureader/**")
    by_query = defaultdict(list)
    for pair in pairs:
        by_query[pair["query"]].append(pair)
    (stain,) = by_query["怎么去除衣服上的油渍"]
    assert len(stain["negatives"]) == 3 and stain["passage"].startswith("衣服上沾了油渍")
    trains = by_query["北京到上海高铁要多久"]
    assert [pair["passage"][:4] for pair in trains] == ["北京南站", "京沪高铁"]
    assert all(len(pair["negatives"]) == 2 for pair in trains)
    assert len(pairs) == 4 and not drops and [(letter.reason, letter.line) for letter in letters] == [("wrong_type", 6)]
    assert {(pair["_declared_query_lang"], pair["task"]) for pair in pairs} == {("zh", get_reader("dureader").task)}

    (tmp_path / "cross.train.tsv").write_text("q\t\tp\t\t1\n", "utf-8")
    with pytest.raises(FileNotFoundError, match="dual.train.tsv"):
        mine(f"dureader={tmp_path}/*")


def test_msmarco_document_ranking_under_the_document_task():
    pairs, drops, letters = mine("msmarco=mining/samples/msmarco/msmarco-doc*")
    by_query = {pair["query"]: pair for pair in pairs}
    assert by_query["how to make compost at home"]["passage"].startswith("How to Start a Compost Pile at Home\nComposting")
    assert by_query["how much should be in an emergency fund"]["passage"].startswith("An emergency fund")  # no title
    assert len(pairs) == 4 and {pair["task"] for pair in pairs} == {
        "Given a web search query, retrieve relevant documents that answer the query"
    }
    assert reasons(drops) == ["doc_missing"] and [letter.reason for letter in letters] == ["wrong_type"]
    passages, _, _ = mine("msmarco=mining/samples/msmarco/triples.train.small.tsv")
    assert {pair["task"] for pair in passages} == {get_reader("msmarco").task}
