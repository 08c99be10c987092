"""No input may end a run: every source kind fed arbitrary bytes, arbitrary JSON values and
mutations of its bundled samples, through its reader (hypothesis, many examples) and through
the real pipeline (one run per pipeline, a few hundred generated records per kind).

What must hold: nothing raises; no record needs the reader_error backstop (a named rule
decides it); every unparseable line is a dead letter at its line; every text a reader
emits is a string UTF-8 can hold; and the manifest conserves every record.
"""

import functools
import json
import math
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import json_repair
import orjson
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import beam_runner
from mining import instruct
from mining.records import DeadLetter, Drop
from mining.sources import ReadLimits, SourceSpec, get_reader, kinds
from mining.sources.base import JoinPart
from pipelines.io import match_files, open_file
from pipelines.mine import BUNDLED_KINDS
from schemas import pairs as f
from schemas.manifest import Manifest
from schemas.reasons import READER_ERROR

SAMPLES = Path(__file__).resolve().parent.parent / "mining" / "samples"
JSON, TEXT, XML, DOCUMENT = "json", "text", "xml", "document"


@dataclass(frozen=True)
class Layout:
    """One file of a kind's input: its name, the bundled sample files its records mutate, and its format."""

    name: str
    samples: str
    form: str


LAYOUTS = {
    "ccnews": [Layout("news.jsonl", "ccnews/*", JSON)],
    "mc4": [Layout("c4-de.json", "mc4/*", JSON)],
    "s2orc": [Layout("papers.jsonl", "s2orc/*", JSON)],
    "sbert": [Layout("train.jsonl", "sbert/*", JSON)],
    "retrieval": [Layout("bge.jsonl", "retrieval/*", JSON)],
    "synthetic": [Layout("generations.jsonl", "synthetic/*", JSON)],
    "xp3": [Layout("fr/xp3.jsonl", "xp3/*/*", JSON)],
    "wikipedia": [Layout("de.jsonl", "wikipedia/*.jsonl", JSON)],
    "reddit": [Layout("RC_1.jsonl", "reddit/RC_*", JSON), Layout("RS_1.jsonl", "reddit/RS_*", JSON)],
    "nli": [Layout("snli.jsonl", "nli/*.jsonl", JSON), Layout("xnli.test.tsv", "nli/*.tsv", TEXT)],
    "nllb": [
        Layout("translations.jsonl", "nllb/*.jsonl", JSON),
        Layout("bitext.fra-eng.fra", "nllb/bitext.fra-eng.fra", TEXT),
        Layout("bitext.fra-eng.eng", "nllb/bitext.fra-eng.eng", TEXT),
    ],
    "miracl": [
        Layout("corpus.jsonl", "miracl/*/corpus.jsonl", JSON),
        Layout("topics.tsv", "miracl/*/topics.tsv", TEXT),
        Layout("qrels.tsv", "miracl/*/qrels.tsv", TEXT),
    ],
    "msmarco": [
        Layout(name, f"msmarco/{name}", TEXT)
        for name in (
            "collection.tsv", "queries.train.tsv", "qrels.train.tsv", "triples.train.small.tsv",
            "msmarco-docs.tsv", "msmarco-doctrain-queries.tsv", "msmarco-doctrain-qrels.tsv",
        )
    ],
    "stackexchange": [Layout("Posts.xml", "stackexchange/Posts.xml", XML)],
    "squad": [Layout("squad.json", "squad/*", DOCUMENT)],
    "dpr": [Layout("biencoder-nq-train.json", "dpr/*", DOCUMENT)],
    "beir": [
        Layout("nq/corpus.jsonl", "beir/*/corpus.jsonl", JSON),
        Layout("nq/queries.jsonl", "beir/*/queries.jsonl", JSON),
        Layout("nq/qrels/train.tsv", "beir/*/qrels/train.tsv", TEXT),
    ],
    "mrtydi": [Layout("mrtydi-v1.1-korean/train.jsonl", "mrtydi/*/train.*", JSON)],
    "quora": [Layout("quora_duplicate_questions.tsv", "quora/*", TEXT)],
    "eli5": [Layout("train_eli5.jsonl", "eli5/*", JSON)],
    "dureader": [Layout("train/dual.train.tsv", "dureader/train/*", TEXT)],
}
FUZZ_SETTINGS = settings(
    max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
# Inputs drawn from a seed do not shrink: report the seed at once.
SEEDED_SETTINGS = settings(FUZZ_SETTINGS, phases=[Phase.explicit, Phase.generate])


def test_every_kind_is_fuzzed():
    assert sorted(LAYOUTS) == kinds() == sorted(kind for group in BUNDLED_KINDS.values() for kind in group)


@functools.cache
def _sample_files(pattern: str) -> tuple[bytes, ...]:
    """The bundled samples, decompressed."""
    contents = []
    for path in sorted(match_files(str(SAMPLES / pattern))):
        with open_file(path) as stream:
            contents.append(stream.read())
    return tuple(contents)


def _sample_lines(pattern: str) -> list[bytes]:
    return [line for data in _sample_files(pattern) for line in data.splitlines() if line.strip()]


# --- arbitrary values: a hypothesis strategy for the reader tests, a seeded generator for pipeline runs ----------

# Every code point, lone surrogates included: what a JSON escape ("\ud800") can smuggle into a parsed string.
_ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=30)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _ANY_TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_ANY_TEXT, children, max_size=4),
    max_leaves=12,
)
_EDGE_VALUES = [
    None, True, 0, -1, 2**63, 2**64 + 1, 10**400, 1e308, math.nan, math.inf, -math.inf, "", " ", "\ud800",
    "\udc00x", "\ud83d\ude00", "\x00", "[deleted]", "{", "}", "\t", "\n", [], {}, [[[[]]]], {"": None}, "x" * 5000,
]


def random_json(rng: random.Random, depth: int = 0):
    """An arbitrary JSON value (NaN, huge numbers and lone surrogates included), or an edge case."""
    roll = rng.random()
    if roll < 0.4 or depth > 3:
        return rng.choice(_EDGE_VALUES)
    if roll < 0.55:
        return "".join(chr(rng.randrange(0x110000)) for _ in range(rng.randrange(12)))
    if roll < 0.7:
        return rng.choice([rng.randrange(-(2**70), 2**70), rng.uniform(-1e6, 1e6)])
    if roll < 0.85:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["", "\ud800", "text", "title", "id", "query", "pos", "translation", "response", "example", "language"]
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(3)}


def random_bytes(rng: random.Random) -> bytes:
    return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))


# --- mutations of real records --------------------------------------------------------------------------------


def _encode_json(value, ensure_ascii: bool) -> bytes:
    """JSON text as a careless producer writes it: NaN and surrogates left as they are (bytes UTF-8 refuses)."""
    return json.dumps(value, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass")


def encode(value, rng: random.Random) -> bytes:
    return _encode_json(value, rng.random() < 0.5)


def mutate_value(value, rng: random.Random):
    """``value`` with one part (a key, an item, the JSON inside a string) replaced, removed or deepened."""
    if isinstance(value, dict) and value and rng.random() < 0.8:
        keys = sorted(value, key=str)
        key = rng.choices(keys, [3 if _structured(value[key]) else 1 for key in keys])[0]
        action = rng.random()
        if action < 0.15:
            return {k: v for k, v in value.items() if k != key}
        return {**value, key: mutate_value(value[key], rng) if action < 0.8 else random_json(rng)}
    if isinstance(value, list) and value and rng.random() < 0.8:
        index = rng.randrange(len(value))
        return [*value[:index], mutate_value(value[index], rng), *value[index + 1 :]]
    if isinstance(value, str) and "{" in value and rng.random() < 0.8:
        return mutate_response(value, rng)
    return random_json(rng)


def _structured(value) -> bool:
    return isinstance(value, (dict, list)) or isinstance(value, str) and "{" in value


# JSON text no strict parser takes but json-repair may: what an LLM's response can hold.
_HOSTILE_JSON = ['"\\ud800"', '"a\\udc00b"', "[" * 1000 + "]" * 1000, "{" * 600 + "}" * 600, "1e999", "NaN",
                 "-Infinity", "9" * 5000, "12345678901234567890123", '"\\u0000"', "'single'", "[1, 2,]", "null"]


def mutate_response(response: str, rng: random.Random) -> str:
    """An LLM response with the JSON it holds mutated: a value replaced by hostile JSON text, cut short or worse."""
    start = response.find("{")
    example = json_repair.loads(response[start:])
    if not isinstance(example, dict) or not example:
        return response[: rng.randrange(len(response) + 1)]
    example = mutate_value(example, rng) if rng.random() < 0.3 else dict(example)
    key = rng.choice(sorted(example, key=str)) if isinstance(example, dict) and example else None
    if key is not None:
        example[key] = "\x00hostile\x00"
    text = json.dumps(example, ensure_ascii=rng.random() < 0.5)
    text = text.replace('"\\u0000hostile\\u0000"', rng.choice(_HOSTILE_JSON))
    if rng.random() < 0.2:
        text = text[: rng.randrange(len(text) + 1)]
    return response[:start] + text


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    position = rng.randrange(len(data) + 1)
    action = rng.random()
    if action < 0.3:
        return data[:position]
    if action < 0.6:
        return data[:position] + random_bytes(rng) + data[position:]
    if action < 0.8:
        return data[:position] + rng.choice([b"\t", b"\t\t", b"\xff", b"\xed\xa0\x80", b"<", b'"', b"\x00"]) + data[
            position + 1 :
        ]
    return data.replace(b"\t", b"", 1) if rng.random() < 0.5 else data + b"\t" + data


def mutated_line(layout: Layout, samples: list[bytes], rng: random.Random) -> bytes:
    """One line of a file in ``layout``: a mutated sample record, arbitrary bytes or an arbitrary JSON value."""
    roll = rng.random()
    sample = rng.choice(samples)
    if roll < 0.15:
        return random_bytes(rng)
    if roll < 0.3:
        return encode(random_json(rng), rng)
    if roll < 0.4:
        return sample
    if layout.form == JSON and roll < 0.85:
        try:
            return encode(mutate_value(orjson.loads(sample), rng), rng)
        except orjson.JSONDecodeError:
            pass  # a sample's own defect: mutate its bytes
    return mutate_bytes(sample, rng).replace(b"\n", b" ").replace(b"\r", b" ")


def write_inputs(directory: Path, kind: str, rng: random.Random, records: int) -> str:
    """Files of every layout of ``kind`` with ``records`` generated lines each; the --source that reads them."""
    for layout in LAYOUTS[kind]:
        samples = _sample_lines(layout.samples)
        path = directory / kind / layout.name
        path.parent.mkdir(parents=True, exist_ok=True)
        if layout.form == DOCUMENT:
            document = orjson.loads(rng.choice(_sample_files(layout.samples)))
            for _ in range(records // 10):
                document = mutate_value(document, rng) if rng.random() < 0.9 else document
            path.write_bytes(encode(document, rng) if rng.random() < 0.9 else random_bytes(rng))
            continue
        lines = [mutated_line(layout, samples, rng) for _ in range(records)]
        if layout.form == XML:
            head, rows, tail = samples[:2], samples[2:-1], samples[-1:]
            lines = [*head, *(mutated_line(layout, rows, rng) for _ in range(records)), *tail]
        elif layout.form == TEXT and layout.name.endswith(".tsv") and kind in ("nli", "quora"):  # header rows
            lines = [samples[0], *lines]
        path.write_bytes(b"\n".join(lines) + b"\n")
    return f"{kind}={directory / kind}/**"


# --- the properties ---------------------------------------------------------------------------------------------


def read_everything(spec_text: str) -> list:
    """Every item of a --source, joins run in plain Python (as tests/test_readers.py does)."""
    spec = SourceSpec.parse(spec_text)
    reader = get_reader(spec.kind)
    items = [item for task in reader.plan(spec, match_files) for item in reader.read(task, open_file, ReadLimits())]
    for round_index in range(reader.join_rounds):
        groups, later, done = defaultdict(list), [], []
        for item in items:
            if not isinstance(item, JoinPart):
                done.append(item)
            elif item.round == round_index:
                groups[item.key].append(item)
            else:
                later.append(item)
        joined = [out for key in sorted(groups) for out in reader.join(round_index, key, groups[key])]
        items = done + later + joined
    return items


def assert_well_formed(items: list) -> None:
    for item in items:
        assert not isinstance(item, JoinPart)
        if isinstance(item, DeadLetter):
            assert item.reason != READER_ERROR, item
            json.dumps(item.to_dict(), ensure_ascii=False).encode("utf-8")
            continue
        record = item.record if isinstance(item, Drop) else item
        for text in (record[f.QUERY], record[f.PASSAGE], *record[f.NEGATIVES]):
            assert isinstance(text, str)
            text.encode("utf-8")
        assert isinstance(record[f.NEGATIVES], list)
        for lang in (record[f.DECLARED_QUERY_LANG], record[f.DECLARED_PASSAGE_LANG]):
            assert lang is None or isinstance(lang, str)


def unparseable_lines(path: Path) -> set[int]:
    """The lines of a JSON-lines file that are no JSON (or no UTF-8) at all."""
    numbers = set()
    for number, line in enumerate(path.read_bytes().split(b"\n")[:-1], start=1):
        if number == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]
        try:
            orjson.loads(line)
        except orjson.JSONDecodeError:
            try:
                blank = not line.decode("utf-8").strip()
            except UnicodeDecodeError:
                blank = False
            if not blank:
                numbers.add(number)
    return numbers


def assert_unparseable_are_dead_letters(directory: Path, kind: str, letters: list[dict]) -> None:
    lines_by_file = defaultdict(set)
    for letter in letters:
        lines_by_file[letter["file"]].add(letter["line"])
    for layout in LAYOUTS[kind]:
        path = directory / kind / layout.name
        if layout.form == JSON:
            assert unparseable_lines(path) <= lines_by_file[str(path)], path


@pytest.mark.parametrize("kind", sorted(LAYOUTS))
@SEEDED_SETTINGS
@given(seed=st.integers(0, 2**32 - 1), records=st.integers(1, 30))
def test_reader_survives_mutated_samples(tmp_path_factory, kind, seed, records):
    directory = tmp_path_factory.mktemp(kind)
    items = read_everything(write_inputs(directory, kind, random.Random(seed), records))
    assert_well_formed(items)
    letters = [item.to_dict() for item in items if isinstance(item, DeadLetter)]
    assert_unparseable_are_dead_letters(directory, kind, letters)


@pytest.mark.parametrize("kind", sorted(LAYOUTS))
@FUZZ_SETTINGS
@given(
    lines=st.lists(st.binary(max_size=60) | st.builds(_encode_json, JSON_VALUES, st.booleans()), min_size=1, max_size=20)
)
def test_reader_survives_arbitrary_bytes_and_json(tmp_path_factory, kind, lines):
    directory = tmp_path_factory.mktemp(kind)
    lines = [line.replace(b"\n", b" ").replace(b"\r", b" ") for line in lines]
    for layout in LAYOUTS[kind]:
        path = directory / kind / layout.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\n".join(lines) + b"\n")
    items = read_everything(f"{kind}={directory / kind}/**")
    assert_well_formed(items)
    letters = [item.to_dict() for item in items if isinstance(item, DeadLetter)]
    assert_unparseable_are_dead_letters(directory, kind, letters)


@FUZZ_SETTINGS
@given(
    task_type=st.sampled_from(sorted(instruct.TEMPLATES)),
    position=st.integers(0, 2),
    value=st.sampled_from(_HOSTILE_JSON) | st.builds(_encode_json, JSON_VALUES, st.booleans()).map(bytes.decode),
    prose=st.sampled_from(["", "Sure! Here is the JSON:\n\n", "```json\n"]),
    cut=st.none() | st.integers(0, 400),
)
def test_synthetic_reader_survives_any_response(tmp_path_factory, task_type, position, value, prose, cut):
    """A response whose JSON holds any value, text no strict parser takes included (lone surrogate escapes,
    1,000 levels, NaN, huge numbers), in place of one of its template's texts."""
    template = instruct.TEMPLATES[task_type]
    keys = template.keys
    example = {key: f"A sentence long enough for any template to take it as its {key}." for key in keys}
    example[keys[position % len(keys)]] = "\x00hostile\x00"
    response = (prose + json.dumps(example).replace(json.dumps("\x00hostile\x00"), value))[:cut]
    language = ["en", "de"] if template.bilingual else "en"
    record = {"task_type": task_type, "instruction": "Retrieve passages", "language": language}
    record["response"] = response
    path = tmp_path_factory.mktemp("synthetic") / "generations.jsonl"
    path.write_bytes(_encode_json(record, False))
    items = read_everything(f"synthetic={path}")
    assert len(items) == 1
    assert_well_formed(items)


@pytest.mark.parametrize("pipeline", sorted(BUNDLED_KINDS))
def test_pipeline_survives_mutated_samples(tmp_path, pipeline):
    """One real run per pipeline over a few hundred generated records of each of its kinds."""
    rng = random.Random(f"fuzz-{pipeline}")
    sources = [write_inputs(tmp_path / "in", kind, rng, 150) for kind in BUNDLED_KINDS[pipeline]]
    output = tmp_path / "out"
    args = [f"--pipeline={pipeline}", *(f"--source={source}" for source in sources), f"--output={output}"]
    assert beam_runner.main(args) == 0

    manifest = Manifest.model_validate_json((output / "manifest.json").read_text("utf-8"))
    for totals in (manifest.totals, *manifest.sources.values()):
        assert totals.input == totals.output + sum(totals.dropped.values()) + totals.dead_letter
    letters = [json.loads(line) for path in (output / "dead_letter").glob("*.jsonl") for line in path.open()]
    assert len(letters) == manifest.totals.dead_letter > 0
    assert not [letter for letter in letters if letter["reason"] == READER_ERROR]
    for kind in BUNDLED_KINDS[pipeline]:
        assert_unparseable_are_dead_letters(tmp_path / "in", kind, letters)
    rows = sum(pa.ipc.open_stream(output / shard.path).read_all().num_rows for shard in manifest.shards)
    assert rows == manifest.totals.output > 0
