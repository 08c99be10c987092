"""--pipeline instruct: LLM generations parsed, checked per template, formatted with their instruction."""

import json

import pyarrow as pa
import pytest

import beam_runner
from mining import instruct
from mining.records import DeadLetter, Drop
from mining.sources.base import Malformed
from mining.sources.synthetic import language_code
from schemas import reasons
from schemas.manifest import Manifest
from schemas.pairs import INSTRUCT_SCHEMA
from tests.conftest import write_lines
from tests.test_readers import mine
from schemas.reasons import INVALID_JSON, MISSING_FIELD, WRONG_TYPE

EXAMPLE = {"user_query": "how do bees make honey", "positive_document": "Bees turn nectar into honey.",
           "hard_negative_document": "Bumblebees store little honey."}


@pytest.mark.parametrize(
    "response",
    [
        ('```json\n{"user_query": "how do bees make honey", "positive_document": "Bees turn nectar into honey.", '
        '"hard_negative_document": "Bumblebees store little honey."}\n```'),
        ('Sure! Here is the JSON:\n\n{"user_query": "how do bees make honey", '
        '"positive_document": "Bees turn nectar into honey.", "hard_negative_document": "Bumblebees store little honey."}'),
        ('{"user_query": "how do bees make honey", "positive_document": "Bees turn nectar into honey.", '
        '"hard_negative_document": "Bumblebees store little honey.",}'),
        ("{'user_query': 'how do bees make honey', 'positive_document': 'Bees turn nectar into honey.', "
        "'hard_negative_document': 'Bumblebees store little honey.'}"),
        ('Here is an example: {"user_query": "how do bees make honey", "positive_document": '
        '"Bees turn nectar into honey.", "hard_negative_document": "Bumblebees store little honey."} Hope it helps {:}'),
        EXAMPLE,
    ],
    ids=["code_fence", "leading_prose", "trailing_comma", "single_quotes", "embedded", "parsed"],
)
def test_messy_responses_parse(response):
    assert instruct.parse_response(response) == EXAMPLE


def test_nesting_up_to_the_limit_and_brackets_inside_strings_are_read():
    brackets = "[" * 5000 + "{" * 5000
    response = (
        '{"user_query": "' + brackets + '", "positive_document": "p", "hard_negative_document": "n", "deep": '
        + "[" * (instruct.MAX_JSON_NESTING - 1) + "]" * (instruct.MAX_JSON_NESTING - 1) + "}"
    )
    texts = instruct.example_texts(instruct.parse_response(response), instruct.TEMPLATES["short-short"])
    assert texts["user_query"] == brackets


@pytest.mark.parametrize(
    "response, reason",
    [
        ('```json\n{"user_query": "what causes tides", "positive_document": "Tides are caused', reasons.TRUNCATED_JSON),
        ("I'm sorry, but I cannot help with that.", INVALID_JSON),
        ("{}", INVALID_JSON),
    ],
)
def test_unparseable_responses_are_malformed(response, reason):
    with pytest.raises(Malformed) as error:
        instruct.parse_response(response)
    assert error.value.reason == reason


@pytest.mark.parametrize(
    "response, reason",
    [
        ('{"user_query": "\\ud800 what", "positive_document": "p", "hard_negative_document": "n"}', INVALID_JSON),
        ('{"user_query": ' + "[" * 1000 + "]" * 1000 + "}", INVALID_JSON),
        ('{"user_query": ' + "[" * 100_000 + "]" * 100_000 + "}", INVALID_JSON),
        ('{"user_query": ' + "{" * 600 + "}" * 600 + "}", INVALID_JSON),
        ('{"user_query": ' + "[" * instruct.MAX_JSON_NESTING + "]" * instruct.MAX_JSON_NESTING + "}", INVALID_JSON),
        ('{"user_query": NaN, "positive_document": "p", "hard_negative_document": "n"}', WRONG_TYPE),
    ],
)
def test_responses_no_strict_parser_takes_are_malformed(response, reason):
    """Lone surrogate escapes (no UTF-8 file can hold them), nesting past MAX_JSON_NESTING (refused
    by a count, whatever the interpreter's recursion limit or stack), NaN."""
    with pytest.raises(Malformed) as error:
        instruct.example_texts(instruct.parse_response(response), instruct.TEMPLATES["short-short"])
    assert error.value.reason == reason


def test_missing_keys_are_malformed():
    with pytest.raises(Malformed) as error:
        instruct.example_texts({"S1": "a", "S2": "b"}, instruct.TEMPLATES["sts"])
    assert error.value.reason == MISSING_FIELD


DOC = "Honey bees collect nectar from flowers and store it in wax cells until the water evaporates."
NEG = "Bumblebees live in small colonies and do not store large amounts of honey for the winter."


@pytest.mark.parametrize(
    "instruction, texts, reason",
    [
        ("Retrieve answers", {"user_query": "bees", "positive_document": DOC, "hard_negative_document": NEG}, None),
        ("", {"user_query": "bees", "positive_document": DOC, "hard_negative_document": NEG},
         reasons.EMPTY_INSTRUCTION),
        ("Retrieve answers", {"user_query": "", "positive_document": DOC, "hard_negative_document": NEG},
         reasons.EMPTY_FIELD),
        ("Retrieve answers", {"user_query": "{query}", "positive_document": DOC, "hard_negative_document": NEG},
         reasons.UNFILLED_PLACEHOLDER),
        ("Retrieve answers", {"user_query": "bees", "positive_document": DOC + " <text>", "hard_negative_document": NEG},
         reasons.UNFILLED_PLACEHOLDER),
        ("Retrieve answers", {"user_query": "bees", "positive_document": DOC, "hard_negative_document": "[document]"},
         reasons.UNFILLED_PLACEHOLDER),
        ("Retrieve answers", {"user_query": "b" * 401, "positive_document": DOC, "hard_negative_document": NEG},
         reasons.TOO_LONG_FOR_TEMPLATE),
        ("Retrieve answers", {"user_query": "bees", "positive_document": "Short.", "hard_negative_document": NEG},
         reasons.TOO_SHORT_FOR_TEMPLATE),
        ("Retrieve answers", {"user_query": "bees", "positive_document": DOC, "hard_negative_document": DOC.upper()},
         reasons.NEGATIVE_EQUALS_POSITIVE),
        ("Bees?", {"user_query": "bees", "positive_document": DOC, "hard_negative_document": NEG},
         reasons.INSTRUCTION_COPIES_QUERY),
    ],
)
def test_template_rules(instruction, texts, reason):
    failed = instruct.check_example(instruction, texts, instruct.TEMPLATES["short-long"])
    assert (failed[0] if failed else None) == reason


def test_language_names_and_codes():
    assert [language_code(name) for name in ("German", "de", "zh-Hans", "Simplified Chinese", "Greek", "Arabic")] == [
        "de", "de", "zh", "zh", "el", "ar",
    ]
    with pytest.raises(ValueError):
        language_code("Elvish")


def test_reader_records_drops_and_dead_letters(tmp_path):
    example = {"S1": "The library is closed on Sundays.", "S2": "Die Bibliothek ist sonntags geschlossen."}
    write_lines(tmp_path / "g.jsonl", [
        {"task_type": "bitext", "instruction": "Retrieve parallel sentences", "language": ["English", "German"],
         "example": example},
        {"task_type": "short-long", "instruction": "Retrieve answers", "language": "English",
         "response": json.dumps({**EXAMPLE, "positive_document": DOC, "hard_negative_document": DOC})},
        {"task_type": "bitext", "instruction": "x", "language": "English", "example": example},
        {"task_type": "classification-ish", "instruction": "x", "response": "{}"},
        {"task_type": "sts", "instruction": "x", "language": "English", "response": '{"S1": "a", "S2": "b"'},
    ])
    pairs, drops, letters = mine(f"synthetic={tmp_path}/g.jsonl")
    (pair,) = pairs
    assert pair["source"] == "synthetic-bitext" and pair["_bilingual"] and pair["negatives"] == []
    assert (pair["_declared_query_lang"], pair["_declared_passage_lang"]) == ("en", "de")
    assert pair["instruction"] == pair["task"] == "Retrieve parallel sentences" and pair["task_type"] == "bitext"
    assert [drop.reason for drop in drops] == [reasons.NEGATIVE_EQUALS_POSITIVE]
    assert all(isinstance(d, Drop) for d in drops) and all(isinstance(d, DeadLetter) for d in letters)
    assert [letter.reason for letter in letters] == ["wrong_type", reasons.UNKNOWN_TASK_TYPE, reasons.TRUNCATED_JSON]


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("instruct")
    assert beam_runner.main(["--pipeline=instruct", f"--output={output}"]) == 0
    manifest = Manifest.model_validate_json((output / "manifest.json").read_text("utf-8"))  # conservation
    rows = [row for shard in manifest.shards for row in pa.ipc.open_stream(output / shard.path).read_all().to_pylist()]
    letters = [json.loads(line) for path in (output / "dead_letter").glob("*.jsonl") for line in path.open()]
    return output, manifest, rows, letters


def test_default_run_catches_every_defect(default_run):
    _, manifest, rows, letters = default_run
    assert manifest.pipeline == "instruct"
    assert set(manifest.totals.dropped) == {
        reasons.EMPTY_FIELD, reasons.EMPTY_INSTRUCTION, reasons.UNFILLED_PLACEHOLDER,
        reasons.NEGATIVE_EQUALS_POSITIVE, reasons.INSTRUCTION_COPIES_QUERY, reasons.TOO_LONG_FOR_TEMPLATE,
        reasons.TOO_SHORT_FOR_TEMPLATE, "identical_sides", "lang_declared_mismatch", "duplicate_pair",
    }
    assert {letter["reason"] for letter in letters} == {
        reasons.TRUNCATED_JSON, INVALID_JSON, MISSING_FIELD, "wrong_type", reasons.UNKNOWN_TASK_TYPE,
        "invalid_language",
    }
    totals = manifest.totals
    assert totals.input == totals.output + sum(totals.dropped.values()) + totals.dead_letter == 44
    # Per template (and, within each, per language).
    assert {source for source, totals in manifest.sources.items() if totals.output} == set(instruct.SOURCES)
    assert len(manifest.sources["synthetic-short-long"].languages) >= 6
    assert manifest.sources["synthetic-bitext"].output == len([row for row in rows if row["task_type"] == "bitext"])
    for name, source in manifest.sources.items():
        instructions = {row["instruction"] for row in rows if row["source"] == name}
        assert source.instructions == (len(instructions) if source.output else None), name


def test_rows_are_formatted_with_their_instruction(default_run):
    _, manifest, rows, _ = default_run
    assert manifest.schema_ == {field.name: str(field.type) for field in INSTRUCT_SCHEMA}
    assert set(rows[0]) == set(INSTRUCT_SCHEMA.names)
    for row in rows:
        assert row["query"].startswith(f"Instruct: {row['instruction']}\nQuery: ")
        assert row["task"] == row["instruction"] and row["source"] == instruct.source_name(row["task_type"])
        assert len(row["negatives"]) == (0 if row["task_type"] == "bitext" else 1)
    bitext = [row for row in rows if row["task_type"] == "bitext"]
    assert {(row["query_lang"], row["passage_lang"]) for row in bitext} >= {("en", "de"), ("el", "en"), ("ja", "en")}


def test_same_example_under_two_instructions_counts_once(default_run):
    _, manifest, rows, _ = default_run
    berlin = [row for row in rows if "Berliner Mauer" in row["query"]]
    assert len(berlin) == 1 and manifest.totals.dropped["duplicate_pair"] == 1
