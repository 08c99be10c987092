"""--pipeline instruct: LLM generations parsed, checked per template, formatted with their instruction."""

import itertools
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
from training.shard_store import shards_by_source
from training.stream import PairStream
from training.prompts import InstructPrompts
from training.tiny import train_tokenizer
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


# The paper's own published example of each task type with its task definition, which the paper
# trains on as the instruction (Wang et al., 2024, "Improving Text Embeddings with Large Language
# Models", Table 16).
PAPER_EXAMPLES = {
    "short-long": (
        "The query is a name of a computer software or app, find documents that offer tutorials, guides or user "
        "experiences about the software or app.",
        {
            "user_query": "How to use Microsoft Power BI for data analysis",
            "positive_document": (
                "Microsoft Power BI is a sophisticated tool that requires time and practice to master. In this "
                "tutorial, we'll show you how to navigate Power BI and perform basic data analysis. First, launch the "
                "application and log in with a Microsoft account. Next, create a new project using the Wizard on the "
                "left-hand toolbar. Import the dataset you wish to work with by clicking on 'Get Data'. Power BI can "
                "handle a variety of file formats, including Excel and CSV. Load your data, then use a sequence of "
                "drag-and-drop operations to generate charts and (if applicable) maps. If you are confused at any "
                "point, consider using the 'Ask a Question' feature for clarification."
            ),
            "hard_negative_document": (
                "Excel is an incredibly powerful tool for managing and analyzing large amounts of data. Our tutorial "
                "series focuses on how you can achieve maximum efficiency with Excel. In this guide, we'll walk you "
                "through transferring data from your computer to an Excel spreadsheet as well as colour-coding cells "
                "to match various criteria. We'll also explore VLOOKUP, conditional formatting, and pivot tables, "
                "essentially transforming you into a spreadsheet wizard. Once you've mastered these techniques, "
                "consider joining us for our Advanced Data Analysis training to branch out even further."
            ),
        },
    ),
    "long-short": (
        "Identifying severity level of customer complaints in support tickets",
        {
            "input_text": (
                "I am writing to express my intense dissatisfaction with one of your products, a TV that has stopped "
                "functioning only a month after purchase. This situation yields less satisfaction to me and speaks "
                "voluminously about your quality control procedures in assembly lines. I hope this troubling issue "
                "etches into your improvement list for invoking earnest attention."
            ),
            "label": "High Severity",
            "misleading_label": "Low Severity",
        },
    ),
    "short-short": (
        "Provided a movie quote, find the movie title in which it is said.",
        {"input": "I'm going to make him an offer he can't refuse.", "positive_document": "The Godfather"},
    ),
    "long-long": (
        "Provided a legal brief, retrieve other legal documents presenting similar legal arguments.",
        {
            "input": (
                "In the united states district court for the eastern district of pennsylvania. Plaintiff John Doe "
                "brings this action against Defendants ABC Corporation and XYZ Inc., alleging negligence which "
                "resulted in his injuries. The Plaintiff alleges ABC Corporation negligently designed, manufactured, "
                "and marketed a specific product. The Plaintiff also asserts XYZ Inc. negligently failed to inspect "
                "the same product, leading to harmful exposure. Plaintiff respectfully requests this honorable court "
                "to hold the defendants liable and award damages. All parties are diverse for purposes of 28 U.S.C. "
                "§ 1332."
            ),
            "positive_document": (
                "Before the Superior Court of California, County of Los Angeles. In the matter of the lawsuit "
                "initiated by the Plaintiff Jane Smith against the Defendants PQR Industries and LMN Enterprises, "
                "charging they negligently designed, produced, and advertised a product that directly caused harm to "
                "her. Furthermore, the Plaintiff has claimed that LMN Enterprises negligently fell short in inspecting "
                "the product, leading to unsafe usage. The plaintiff hereby requests this esteemed court to declare "
                "the defendants guilty and demands compensation for the damages suffered. According to 28 U.S.C. "
                "§ 1332, complete diversity exists between the parties to this lawsuit."
            ),
        },
    ),
    "bitext": (
        "Retrieve parallel sentences.",
        {
            "S1": "Men bugun uzumli tort yasashni rejalashtirdim.",
            "S2": "I have planned to make a grape cake today.",
            "S3": "I am going to bake a strawberry pie today.",
        },
    ),
    "sts": (
        "Retrieve semantically similar text.",
        {
            "S1": "Tom loves to ride his blue bicycle in the park every morning.",
            "S2": "Every morning, Tom enjoys riding his blue bike in the park.",
            "S3": "Tom takes his blue pen to school every day.",
        },
    ),
}


# (query, positive, hard negative) of each prompt's keys: the classification prompt's label and misleading
# label, STS's lower-scored S3 and bitext's bad translation S3 are the hard negatives; the text matching
# prompts ask for none.
PAPER_ROLES = {
    "short-long": ("user_query", "positive_document", "hard_negative_document"),
    "long-short": ("input_text", "label", "misleading_label"),
    "short-short": ("input", "positive_document", None),
    "long-long": ("input", "positive_document", None),
    "sts": ("S1", "S2", "S3"),
    "bitext": ("S1", "S2", "S3"),
}


def _expected_pair(task_type: str) -> tuple[str, str, list[str]]:
    """(query, passage, negatives) the paper's example of ``task_type`` becomes."""
    query, positive, negative = PAPER_ROLES[task_type]
    example = PAPER_EXAMPLES[task_type][1]
    return example[query], example[positive], [example[negative]] if negative else []


def _generation(task_type: str, response: str) -> dict:
    """A line of generations.jsonl for one of the paper's examples (bitext: Uzbek to English)."""
    language = ["Uzbek", "English"] if task_type == "bitext" else "English"
    return {"task_type": task_type, "instruction": PAPER_EXAMPLES[task_type][0], "language": language,
            "response": response}


def test_each_template_has_the_keys_its_prompt_asks_for():
    """Each in its role, and ``keys`` in the order the prompt lists them (what a generator asks for)."""
    templates = instruct.TEMPLATES
    assert {name: (t.query, t.positive, t.negative) for name, t in templates.items()} == PAPER_ROLES
    assert {name: template.keys for name, template in templates.items()} == {
        name: tuple(example) for name, (_, example) in PAPER_EXAMPLES.items()
    }


def test_papers_published_examples_come_out_as_rows(tmp_path):
    """Every published example, through a whole run: a row with its hard negative where the template has one."""
    source = write_lines(tmp_path / "paper.jsonl", [
        _generation(task_type, json.dumps(example, indent=2)) for task_type, (_, example) in PAPER_EXAMPLES.items()
    ])
    output = tmp_path / "out"
    # With the default options: lid.176.ftz ranks uz sixth (1.5%) for the 46-byte Uzbek S1 of the bitext example.
    args = ["--pipeline=instruct", f"--source=synthetic={source}", f"--output={output}"]
    assert beam_runner.main(args) == 0
    manifest = Manifest.model_validate_json((output / "manifest.json").read_text("utf-8"))
    assert manifest.totals.input == manifest.totals.output == len(PAPER_EXAMPLES)
    rows = {row["task_type"]: row for shard in manifest.shards
            for row in pa.ipc.open_stream(output / shard.path).read_all().to_pylist()}
    for task_type, (task, _) in PAPER_EXAMPLES.items():
        query, passage, negatives = _expected_pair(task_type)
        row = rows[task_type]
        assert (row["query"], row["passage"], row["negatives"]) == (f"Instruct: {task}\nQuery: {query}", passage,
                                                                     negatives), task_type
    assert (rows["bitext"]["query_lang"], rows["bitext"]["passage_lang"]) == ("uz", "en")


def _answered(body: str, form: str) -> str:
    """``body``, a JSON object, as models return it."""
    return {
        "code_fence": f"```json\n{body}\n```",
        "bare_fence": f"```\n{body}\n```",
        "prose_around": f"Sure! Here is one example for this task:\n\n{body}\n\nLet me know if you need more examples.",
        "trailing_comma": body.removesuffix("\n}") + ",\n}",
        "truncated": body[: len(body) * 2 // 3],
        "refusal": "I'm sorry, but I can't help with that request.",
    }[form]


@pytest.mark.parametrize("form", ["code_fence", "bare_fence", "prose_around", "trailing_comma", "truncated", "refusal"])
@pytest.mark.parametrize("task_type", sorted(PAPER_EXAMPLES))
def test_every_template_reads_responses_as_models_return_them(tmp_path, task_type, form):
    response = _answered(json.dumps(PAPER_EXAMPLES[task_type][1], indent=2, ensure_ascii=False), form)
    write_lines(tmp_path / "g.jsonl", [_generation(task_type, response)])
    pairs, drops, letters = mine(f"synthetic={tmp_path}/g.jsonl")
    if form in ("truncated", "refusal"):
        assert not pairs and not drops
        expected = reasons.TRUNCATED_JSON if form == "truncated" else INVALID_JSON
        assert [letter.reason for letter in letters] == [expected]
        return
    assert not drops and not letters
    (pair,) = pairs
    assert (pair["query"], pair["passage"], pair["negatives"]) == _expected_pair(task_type)


def test_nesting_up_to_the_limit_and_brackets_inside_strings_are_read():
    brackets = "[" * 5000 + "{" * 5000
    response = (
        '{"user_query": "' + brackets + '", "positive_document": "p", "hard_negative_document": "n", "deep": '
        + "[" * (instruct.MAX_JSON_NESTING - 1) + "]" * (instruct.MAX_JSON_NESTING - 1) + "}"
    )
    texts = instruct.example_texts(instruct.parse_response(response), instruct.TEMPLATES["short-long"])
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
        instruct.example_texts(instruct.parse_response(response), instruct.TEMPLATES["short-long"])
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


PASSAGE = " ".join(["Tom rides his blue bicycle through the park every morning before work."] * 25)


@pytest.mark.parametrize(
    "task_type, texts, reason",
    [
        # Classification: input_text of "less than 10" up to "at least 200" words; labels are class names.
        ("long-short", {"input_text": "Great movie!", "label": "positive", "misleading_label": "neutral"}, None),
        ("long-short", {"input_text": DOC, "label": "The customer is " + "very " * 20 + "happy",
                        "misleading_label": "neutral"}, reasons.TOO_LONG_FOR_TEMPLATE),
        ("long-short", {"input_text": DOC, "label": "positive", "misleading_label": "Positive"},
         reasons.NEGATIVE_EQUALS_POSITIVE),
        ("long-short", {"input_text": DOC, "label": "[label]", "misleading_label": "neutral"},
         reasons.UNFILLED_PLACEHOLDER),
        # Text matching: no negative; short-short texts are "a sentence or a phrase", long-long ones long.
        ("short-short", {"input": "Match a word with its definition", "positive_document": "The Godfather"}, None),
        ("short-short", {"input": "b" * 401, "positive_document": "The Godfather"}, reasons.TOO_LONG_FOR_TEMPLATE),
        ("long-long", {"input": "Solar power.", "positive_document": DOC}, reasons.TOO_SHORT_FOR_TEMPLATE),
        ("long-long", {"input": NEG, "positive_document": DOC}, None),
        # STS and bitext: the prompt's unit may be a passage; S3 is the lower-scored, hard negative.
        ("sts", {"S1": PASSAGE, "S2": PASSAGE.replace("rides", "cycles"), "S3": "Tom walks."}, None),
        ("bitext", {"S1": "Men bugun tort yasadim.", "S2": "I made a cake today.", "S3": "I MADE A CAKE TODAY."},
         reasons.NEGATIVE_EQUALS_POSITIVE),
    ],
)
def test_length_and_negative_rules_follow_each_prompt(task_type, texts, reason):
    failed = instruct.check_example("Retrieve answers", texts, instruct.TEMPLATES[task_type])
    assert (failed[0] if failed else None) == reason


def test_language_names_and_codes():
    assert [language_code(name) for name in ("German", "de", "zh-Hans", "Simplified Chinese", "Greek", "Arabic")] == [
        "de", "de", "zh", "zh", "el", "ar",
    ]
    with pytest.raises(ValueError):
        language_code("Elvish")


def test_reader_records_drops_and_dead_letters(tmp_path):
    example = {"S1": "The library is closed on Sundays.", "S2": "Die Bibliothek ist sonntags geschlossen.",
               "S3": "Die Bibliothek ist sonntags geöffnet."}
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
    assert pair["source"] == "synthetic-bitext" and pair["_bilingual"]
    assert pair["negatives"] == ["Die Bibliothek ist sonntags geöffnet."]  # S3, the bad translation
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
    assert totals.input == totals.output + sum(totals.dropped.values()) + totals.dead_letter == 47
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
        assert len(row["negatives"]) == (1 if PAPER_ROLES[row["task_type"]][2] else 0)
    bitext = [row for row in rows if row["task_type"] == "bitext"]
    assert {(row["query_lang"], row["passage_lang"]) for row in bitext} >= {("en", "de"), ("el", "en"), ("ja", "en")}


def test_same_example_under_two_instructions_counts_once(default_run):
    _, manifest, rows, _ = default_run
    berlin = [row for row in rows if "Berliner Mauer" in row["query"]]
    assert len(berlin) == 1 and manifest.totals.dropped["duplicate_pair"] == 1


def test_inspect_and_the_trainer_read_the_default_run(default_run, tmp_path, capsys):
    output, manifest, rows, _ = default_run
    assert beam_runner.main(["inspect", "summary", str(output)]) == 0
    assert f"input {manifest.totals.input} = output {manifest.totals.output}" in capsys.readouterr().out
    texts = [text for row in rows for text in (row["query"], row["passage"], *row["negatives"])]
    tokenizer = train_tokenizer(texts, vocab_size=400, max_length=128)
    stream = PairStream(shards_by_source([str(output)]), tokenizer, batch_size=4, max_negatives=7,
                        default_prompts=InstructPrompts("Retrieve passages"), cache_dir=tmp_path)
    negatives_by_source = {}
    for planned in itertools.islice(stream.schedule.batches(), 200):
        batch = stream.materialise(planned)
        negatives_by_source.setdefault(batch.source, set()).update(batch.negative_counts.tolist())
    # Each template's rows train with their hard negative; the matching templates have none.
    assert negatives_by_source == {
        instruct.source_name(task_type): {1 if negative else 0} for task_type, (_, _, negative) in PAPER_ROLES.items()
    }
