"""The whole pretrain pipeline on the FnApiRunner, with real files and the real fastText model."""

import hashlib
import json
import os
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

import beam_runner
from inspection.html_report import report_html
from inspection.summary import format_summary
from mining.sources import get_reader
from schemas.manifest import Manifest
from tests.conftest import write_lines

GERMAN = [
    ("Wie hoch ist der Kölner Dom?", "Der Kölner Dom ist mit seinen zwei Türmen gut 157 Meter hoch und prägt die Stadt."),
    ("Wann fährt der letzte Zug?", "Der letzte Zug nach München fährt heute Abend um zweiundzwanzig Uhr vom Hauptbahnhof."),
]
ENGLISH = [
    ("How long is the river Thames?", "The Thames flows for about 346 kilometres from the Cotswolds to the North Sea."),
    ("What do pandas eat?", "Giant pandas feed almost entirely on bamboo, eating for up to fourteen hours a day."),
]
SPANISH = ("¿Dónde nace el río Ebro?", "El río Ebro nace en Fontibre, en Cantabria, y desemboca en el mar Mediterráneo.")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    write_lines(
        root / "sbert" / "qa.jsonl",
        [
            *map(list, GERMAN), *map(list, ENGLISH), list(SPANISH),
            list(ENGLISH[0]),  # exact duplicate
            [ENGLISH[1][0].upper(), ENGLISH[1][1] + "  "],  # duplicate up to case and spacing
            [ENGLISH[0][0], GERMAN[0][1]],  # sides in two languages
            ["Same words on both sides here", "same words on both sides here"],
            ["An empty passage follows", "   "],
            ["Was ist FranzÃ¶sisch?", "<p>FranzÃ¶sisch ist eine romanische Sprache, die in Frankreich gesprochen wird.</p>"],
            b'["unterminated", ',
            b'["caf\xff", "invalid bytes"]',
            {"not": "an array"},
            ["one item"],
        ],
    )
    body = "Die Regierung hat am Montag ein neues Gesetz zum Klimaschutz vorgestellt, das ab dem kommenden Jahr gilt."
    write_lines(
        root / "ccnews" / "news.jsonl.gz",
        [
            {"title": "Neues Klimagesetz vorgestellt", "text": body, "language": "de"},
            {"title": "Regierung stellt Gesetz vor", "maintext": body},  # syndicated copy
            {"title": "Nouvelle loi sur le climat", "text": body, "language": "fr"},  # wrong declared language
            {"title": "Kein Text"},
        ],
        compress=True,
    )
    return root


def run(corpus: Path, output: Path, tatoeba_dir: Path, *extra: str) -> Manifest:
    args = [
        f"--source=sbert={corpus}/sbert/*.jsonl",
        f"--source=ccnews={corpus}/ccnews/*",
        f"--source=nllb={tatoeba_dir}/tatoeba.cmn-eng",
        f"--output={output}",
        *extra,
    ]
    assert beam_runner.main(args) == 0
    return Manifest.model_validate_json((output / "manifest.json").read_text("utf-8"))


@pytest.fixture(scope="module")
def mined(corpus, tatoeba_dir, tmp_path_factory):
    output = tmp_path_factory.mktemp("out")
    return output, run(corpus, output, tatoeba_dir, "--shard-size-mb=0.02")


def _rows(output: Path, manifest: Manifest) -> list[dict]:
    return [row for shard in manifest.shards for row in pa.ipc.open_stream(output / shard.path).read_all().to_pylist()]


def test_every_record_is_accounted_for(mined):
    _, manifest = mined
    sbert, ccnews, nllb = (manifest.sources[name] for name in ("sbert", "ccnews", "nllb"))
    assert (sbert.input, sbert.output, sbert.dead_letter) == (15, 6, 4)
    assert sbert.dropped == {
        "duplicate_pair": 2, "empty_side": 1, "identical_sides": 1, "lang_pair_mismatch": 1,
    }
    assert (ccnews.input, ccnews.output, ccnews.dead_letter) == (4, 1, 1)
    assert ccnews.dropped == {"duplicate_passage": 1, "lang_declared_mismatch": 1}
    assert nllb.input == 1000 and nllb.output >= 980
    assert manifest.totals.input == 1019
    # pydantic has checked input == output + dropped + dead_letter for each.


def test_shards_match_the_manifest_and_load_everywhere(mined):
    output, manifest = mined
    assert len([s for s in manifest.shards if s.source == "nllb"]) > 1, "small --shard-size-mb splits a source"
    for shard in manifest.shards:
        data = (output / shard.path).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (shard.bytes, shard.sha256)
        table = pa.ipc.open_stream(data).read_all()
        assert table.num_rows == shard.rows and set(table.column("source").to_pylist()) == {shard.source}
    rows = _rows(output, manifest)
    assert len(rows) == manifest.totals.output == len({row["id"] for row in rows})
    leftovers = [p for p in output.rglob("*") if p.name.startswith(".")]
    assert not leftovers

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import datasets

    files = [str(output / shard.path) for shard in manifest.shards]
    loaded = datasets.load_dataset("arrow", data_files=files, split="train", cache_dir=str(output.parent / "hf"))
    assert loaded.num_rows == manifest.totals.output
    # The run's dataset card tells datasets where its rows are: the directory alone loads, every source or one.
    whole = datasets.load_dataset(str(output), split="train", cache_dir=str(output.parent / "hf-card"))
    assert sorted(whole["id"]) == sorted(row["id"] for row in rows)
    nllb = datasets.load_dataset(str(output), "nllb", split="train", cache_dir=str(output.parent / "hf-card"))
    assert set(nllb["source"]) == {"nllb"} and nllb.num_rows == manifest.sources["nllb"].output


def test_cleaned_and_identified_rows(mined):
    output, manifest = mined
    rows = {row["query"]: row for row in _rows(output, manifest)}
    french = rows["Was ist Französisch?"]
    assert french["passage"].startswith("Französisch ist eine romanische Sprache") and "<p>" not in french["passage"]
    assert (french["query_lang"], french["passage_lang"]) == ("de", "de")
    assert rows[SPANISH[0]]["passage_lang"] == "es"
    chinese = [row for row in rows.values() if row["source"] == "nllb"]
    assert Counter((row["query_lang"], row["passage_lang"]) for row in chinese) == {("zh", "en"): len(chinese)}
    assert manifest.sources["nllb"].languages == {"en": len(chinese), "zh": len(chinese)}


def test_dead_letters_and_rejected_samples_are_written(mined):
    output, manifest = mined
    letters = [json.loads(line) for path in (output / "dead_letter").glob("*.jsonl") for line in path.open()]
    assert Counter(letter["reason"] for letter in letters) == {
        "invalid_json": 1, "invalid_utf8": 1, "missing_field": 3,
    }
    assert all(letter["file"] and letter["payload"] is not None for letter in letters)
    rejected = {path.stem: [json.loads(line) for line in path.open()] for path in (output / "rejected").glob("*.jsonl")}
    assert set(rejected) == set(manifest.totals.dropped)
    (duplicate,) = rejected["duplicate_passage"]
    assert duplicate["source"] == "ccnews" and duplicate["detail"].startswith("group ")


def test_same_shards_whatever_the_worker_count(corpus, tatoeba_dir, tmp_path, mined):
    _, first = mined
    second = run(
        corpus, tmp_path / "two", tatoeba_dir, "--shard-size-mb=0.02",
        "--direct_num_workers=2", "--direct_running_mode=multi_processing",
    )
    assert [(s.path, s.sha256) for s in second.shards] == [(s.path, s.sha256) for s in first.shards]
    assert second.totals == first.totals


def test_rerun_needs_overwrite_and_never_touches_foreign_files(corpus, tatoeba_dir, tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="notes.txt"):
        run(corpus, output, tatoeba_dir, "--overwrite")
    (output / "notes.txt").unlink()
    run(corpus, output, tatoeba_dir, "--shard-size-mb=0.02")
    with pytest.raises(SystemExit, match="add --overwrite"):
        run(corpus, output, tatoeba_dir)
    manifest = run(corpus, output, tatoeba_dir, "--overwrite")
    assert sorted(str(p.relative_to(output)) for p in (output / "shards").rglob("*.arrow")) == sorted(
        s.path for s in manifest.shards
    )
    assert sorted(path.name for path in output.iterdir()) == [
        "README.md", "dead_letter", "manifest.json", "rejected", "shards"
    ]
    # A README.md with no run beside it is the user's: never replaced, --overwrite or not.
    (output / "manifest.json").unlink()
    with pytest.raises(SystemExit, match="README.md"):
        run(corpus, output, tatoeba_dir, "--overwrite")


def test_bad_options_fail_fast_with_one_line(tmp_path):
    with pytest.raises(SystemExit, match="--sorce"):
        beam_runner.main(["--sorce=sbert=x", f"--output={tmp_path}"])
    with pytest.raises(SystemExit, match="no file matches"):
        beam_runner.main([f"--source=sbert={tmp_path}/missing/*.jsonl", f"--output={tmp_path}/out"])
    with pytest.raises(SystemExit, match="--exclude .*no file matches"):
        beam_runner.main([f"--exclude={tmp_path}/missing/*", f"--output={tmp_path}/out"])
    with pytest.raises(SystemExit, match="unknown source kind"):
        beam_runner.main([f"--source=nope={tmp_path}/*", f"--output={tmp_path}/out"])
    with pytest.raises(SystemExit, match="--temp_location"):
        beam_runner.main(["--runner=DataflowRunner", "--project=p", "--region=r", f"--output={tmp_path}/out"])


@pytest.mark.parametrize("code", ["fra", "rus", "cmn", "kor", "ell", "heb"])
def test_tatoeba_translations_are_kept_with_their_languages(tatoeba_dir, tmp_path, code):
    output = tmp_path / code
    assert beam_runner.main([f"--source=nllb={tatoeba_dir}/tatoeba.{code}-eng", f"--output={output}"]) == 0
    manifest = Manifest.model_validate_json((output / "manifest.json").read_text("utf-8"))
    rows = _rows(output, manifest)
    assert manifest.totals.input == 1000
    assert len(rows) >= 980, manifest.totals.dropped
    (pair,) = {(row["query_lang"], row["passage_lang"]) for row in rows}
    assert pair[1] == "en" and pair[0] == {"fra": "fr", "rus": "ru", "cmn": "zh", "kor": "ko", "ell": "el", "heb": "he"}[code]


def test_a_language_without_a_model_label_is_kept_and_counted_unverified(tatoeba_dir, tmp_path):
    """Kabyle, which lid.176 has no label for: kept, each pair counted unverified under its language."""
    output = tmp_path / "kab"
    assert beam_runner.main([f"--source=nllb={tatoeba_dir}/tatoeba.kab-eng", f"--output={output}"]) == 0
    manifest = Manifest.model_validate_json((output / "manifest.json").read_text("utf-8"))
    kabyle = manifest.sources["nllb"].declared_languages["kab"]
    assert kabyle.input == 1000 and kabyle.output >= 950 and kabyle.unverified >= 900
    assert kabyle.output == manifest.totals.output and "kab" not in manifest.options["lid_labels"]
    rows = _rows(output, manifest)
    assert {row["query_lang"] for row in rows} == {"kab"}
    assert all(row["query_lang_score"] is None for row in rows)
    summary = format_summary(manifest, str(output)).splitlines()
    header = next(index for index, line in enumerate(summary) if line.startswith("declared"))
    assert summary[header + 1].split()[:5] == ["kab", "1000", str(kabyle.output), f"{kabyle.output / 1000:.1%}",
                                               str(kabyle.unverified)]
    assert "Declared languages (fewest kept first)" in report_html(manifest, "kab")


def test_default_run_mines_the_bundled_samples(default_pretrain_run, tmp_path):
    """The Quick start: no arguments but the output, every stage has work to do."""
    output, printed = default_pretrain_run
    manifest = Manifest.model_validate_json((output / "manifest.json").read_text("utf-8"))
    assert f"input {manifest.totals.input} = output {manifest.totals.output}" in printed
    assert set(manifest.sources) == {
        "sbert", "nllb", "ccnews", "wikipedia", "mc4", "reddit", "s2orc", "stackexchange", "xp3",
    }
    assert all(source.output > 0 for source in manifest.sources.values())
    assert sum(source.sampling_weight for source in manifest.sources.values()) == pytest.approx(1.0)

    # Joins (Reddit, StackExchange) included, the shards do not depend on the worker count.
    two = tmp_path / "two-workers"
    assert beam_runner.main([f"--output={two}", "--direct_num_workers=2"]) == 0
    again = Manifest.model_validate_json((two / "manifest.json").read_text("utf-8"))
    assert [(s.path, s.sha256) for s in again.shards] == [(s.path, s.sha256) for s in manifest.shards]
    assert {
        "empty_side", "identical_sides", "duplicate_pair", "duplicate_passage", "near_duplicate",
        "lang_declared_mismatch", "lang_pair_mismatch",
    } <= set(manifest.totals.dropped)
    letters = [json.loads(line) for path in (output / "dead_letter").glob("*.jsonl") for line in path.open()]
    assert {"invalid_json", "invalid_utf8", "wrong_type", "misaligned_line"} <= {letter["reason"] for letter in letters}
    languages = Counter()
    for source in manifest.sources.values():
        languages.update(source.languages)
    assert len([lang for lang, rows in languages.items() if rows >= 20]) >= 10


def test_xquad_through_the_finetune_pipeline(tmp_path):
    """At least 97% of each language's 1190 question-context pairs come out, with a task."""
    codes = ("en", "de", "es", "ru", "zh", "ar", "hi")
    sources = [f"--source=squad:{code}=../shared/data/xquad/xquad.{code}.json" for code in codes]
    assert beam_runner.main(["--pipeline=finetune", *sources, f"--output={tmp_path}"]) == 0
    manifest = Manifest.model_validate_json((tmp_path / "manifest.json").read_text("utf-8"))
    assert manifest.pipeline == "finetune" and "task" in manifest.schema_
    assert manifest.totals.input == 7 * 1190
    for code in codes:
        assert manifest.sources["squad"].languages[code] >= 0.97 * 1190, code
    # near_duplicate: questions one word apart about the same paragraph.
    assert set(manifest.totals.dropped) <= {"duplicate_pair", "lang_declared_mismatch", "near_duplicate"}
    rows = _rows(tmp_path, manifest)
    assert {row["task"] for row in rows} == {get_reader("squad").task}


def test_default_finetune_run_joins_and_keeps_negatives(tmp_path):
    assert beam_runner.main(["--pipeline=finetune", f"--output={tmp_path}"]) == 0
    manifest = Manifest.model_validate_json((tmp_path / "manifest.json").read_text("utf-8"))
    assert set(manifest.sources) == {"squad", "msmarco", "retrieval", "nli", "miracl", "dpr", "beir", "mrtydi", "quora", "eli5", "dureader"}
    assert all(source.output > 0 for source in manifest.sources.values())
    assert {"unanswerable", "doc_missing", "query_missing"} <= set(manifest.totals.dropped)
    rows = _rows(tmp_path, manifest)
    by_source = {source: [row for row in rows if row["source"] == source] for source in manifest.sources}
    assert any(row["negatives"] for row in by_source["nli"]) and any(row["negatives"] for row in by_source["miracl"])
    assert all(row["task"] for row in rows)
    assert {row["query_lang"] for row in by_source["miracl"]} == {"ja", "ar"}
