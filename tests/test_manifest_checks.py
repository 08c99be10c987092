"""A manifest whose counts disagree with each other is refused: on write, and by every reader."""

import copy
import io
import json
import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

import beam_runner
from mining import shards
from mining.records import new_pair
from mining.report import FunnelReport, build_manifest
from schemas.manifest import RANK_BIN_LABELS, ManifestError, parse_manifest
from schemas.pairs import PAIR_SCHEMA
from tests.conftest import write_lines
from training.cli import main as training_main

NLLB_SHARD = "shards/nllb/nllb-00000-of-00001.arrow"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A real run with two sources, drops and a dead letter, so that every count is non-trivial."""
    root = tmp_path_factory.mktemp("manifest_checks")
    write_lines(root / "in" / "qa.jsonl", [
        ["How long is the Thames?", "The Thames flows for about 346 kilometres to the North Sea."],
        ["How long is the Thames?", "The Thames flows for about 346 kilometres to the North Sea."],
        ["Wie hoch ist der Kölner Dom?", "Der Kölner Dom ist gut 157 Meter hoch und prägt das Stadtbild."],
        b"{broken",
    ])
    sources = [f"--source=sbert={root}/in/qa.jsonl", "--source=nllb=mining/samples/nllb/translations.jsonl"]
    assert beam_runner.main([*sources, f"--output={root / 'run'}"]) == 0
    return root / "run"


@pytest.fixture(scope="module")
def manifest(run_dir) -> dict:
    document = json.loads((run_dir / "manifest.json").read_text("utf-8"))
    parse_manifest(json.dumps(document))  # the run as written is accepted
    nllb = document["sources"]["nllb"]
    assert document["totals"]["dead_letter"] and nllb["dropped"] and len(nllb["languages"]) > 2
    assert [shard["path"] for shard in document["shards"]][0] == NLLB_SHARD
    return document


def _first_lang(document: dict) -> str:
    return next(iter(document["sources"]["nllb"]["lengths"]))


def _listed_twice(document):
    document["shards"].append(copy.deepcopy(document["shards"][0]))


def _listed_twice_spelled_differently(document):
    document["shards"].append({**document["shards"][0], "path": "shards/./nllb/nllb-00000-of-00001.arrow"})


def _shard_rows(document):
    document["shards"][0]["rows"] -= 1


def _unknown_source(document):
    document["shards"][0]["source"] = "ccnews"


def _totals_output_and_input(document):
    document["totals"]["output"] += 1
    document["totals"]["input"] += 1


def _source_not_conserved(document):
    document["sources"]["nllb"]["input"] += 1


def _drop_moved_to_dead_letter(document):
    nllb = document["sources"]["nllb"]
    reason = next(iter(nllb["dropped"]))
    nllb["dropped"][reason] -= 1
    nllb["dead_letter"] += 1
    # A dead letter has no language: the drop leaves its language's counts too, which stay consistent.
    lang = next(lang for lang, counts in nllb["declared_languages"].items() if counts["dropped"].get(reason))
    nllb["declared_languages"][lang]["dropped"][reason] -= 1
    nllb["declared_languages"][lang]["input"] -= 1


def _language_input_inflated(document):
    counts = document["sources"]["nllb"]["declared_languages"]["fr"]
    counts["input"] += 1
    counts["output"] += 1


def _language_not_conserved(document):
    document["sources"]["nllb"]["declared_languages"]["fr"]["output"] += 1


def _totals_drop_reason_renamed(document):
    dropped = document["totals"]["dropped"]
    reason = next(iter(dropped))
    dropped["renamed"] = dropped.pop(reason)


def _negative_dead_letter(document):
    nllb = document["sources"]["nllb"]
    nllb["output"] += nllb["dead_letter"] + 1  # still conserved: only the sign is wrong
    nllb["dead_letter"] = -1


def _negative_shard_language(document):
    document["shards"][0]["languages"]["en"] = -1


def _shard_language_over_rows(document):
    document["shards"][0]["languages"]["en"] = document["shards"][0]["rows"] + 1


def _source_languages(document):
    document["sources"]["nllb"]["languages"]["en"] += 1


def _sampling_weight(document):
    document["sources"]["nllb"]["sampling_weight"] /= 2


def _histogram_count(document):
    document["sources"]["nllb"]["lengths"][_first_lang(document)]["query"]["count"] += 1


def _passage_without_query(document):
    passage = document["sources"]["nllb"]["lengths"][_first_lang(document)]["passage"]
    passage["count"] += 1
    passage["histogram"][3] += 1


def _created(document):
    document["created"] = "yesterday"


def _negative_instructions(document):
    document["sources"]["nllb"]["instructions"] = -2


def _rank_bins(document):
    document["sources"]["nllb"]["consistency_ranks"] = {"en": {"1": 3, "2": 1}}


def _negative_skips(document):
    document["sources"]["nllb"]["skipped_negatives"] = {"above_max_score": -1}


def _shard_path_is_the_directory(document):
    document["shards"][0]["path"] = "shards/.."


CORRUPTIONS = {
    "shard listed twice": (_listed_twice, r"shards\.2\.path '[^']+' is listed twice \(also shards\.0\.path\)"),
    "shard listed twice, spelled differently": (_listed_twice_spelled_differently, r"shards\.2\.path .* listed twice"),
    "shard rows != source output": (_shard_rows, r"sources\.nllb\.output \d+ != \d+ rows in its shards"),
    "shard of no source": (_unknown_source, r"shards\.0\.source 'ccnews' is not among the sources"),
    "totals != sum over sources": (_totals_output_and_input, r"totals\.output \d+ != \d+ summed over the sources"),
    "source not conserved": (_source_not_conserved, r"sources\.nllb: records not conserved"),
    "per-source drops != totals": (_drop_moved_to_dead_letter, r"totals\.dead_letter \d+ != \d+ summed"),
    "language counts != the source's": (
        _language_input_inflated, r"sources\.nllb: declared_languages count \d+ records, not input \d+ - dead_letter"
    ),
    "language not conserved": (_language_not_conserved, r"declared_languages\.fr: input \d+ != output \d+ \+ dropped"),
    "drop reason only in the totals": (_totals_drop_reason_renamed, r"totals\.dropped\.renamed \d+ != 0 summed"),
    "negative count": (_negative_dead_letter, r"sources\.nllb\.dead_letter: Input should be greater than or equal"),
    "negative shard language": (_negative_shard_language, r"shards\.0\.languages\.en: Input should be greater"),
    "shard language over its rows": (_shard_language_over_rows, r"shards\.0: languages\.en \d+ > rows \d+"),
    "source languages != its shards'": (_source_languages, r"sources\.nllb\.languages\.en \d+ != \d+ summed over its"),
    "sampling weights do not sum to 1": (_sampling_weight, r"sources\.\*\.sampling_weight sum to 0\.\d+, not 1"),
    "length count != histogram": (_histogram_count, r"sources\.nllb\.lengths\.\w+\.query: count \d+ != \d+ texts"),
    "passages != queries": (_passage_without_query, r"sources\.nllb\.lengths\.\w+: query\.count \d+ != passage\.count"),
    "created is no time": (_created, r"created: 'yesterday' is not an ISO 8601 time"),
    "negative instruction count": (_negative_instructions, r"sources\.nllb\.instructions: Input should be greater"),
    "rank histogram missing bins": (_rank_bins, r"sources\.nllb\.consistency_ranks: en: a rank histogram has every"),
    "negative skipped candidates": (_negative_skips, r"sources\.nllb\.skipped_negatives\.above_max_score: Input"),
    "shard path is the directory": (_shard_path_is_the_directory, r"shards\.0\.path: shard path .* inside the output"),
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_a_corrupted_field_is_refused_naming_it(manifest, corrupt):
    change, message = corrupt
    document = copy.deepcopy(manifest)
    change(document)
    with pytest.raises(ManifestError, match=message) as refused:
        parse_manifest(json.dumps(document))
    assert "\n" not in str(refused.value)


def _corrupted_copy(run_dir: Path, tmp_path: Path, change) -> Path:
    copied = tmp_path / "run"
    shutil.copytree(run_dir, copied)
    document = json.loads((copied / "manifest.json").read_text("utf-8"))
    change(document)
    (copied / "manifest.json").write_text(json.dumps(document), "utf-8")
    return copied


def test_the_trainer_refuses_a_shard_listed_twice_in_one_line(run_dir, tmp_path):
    data = _corrupted_copy(run_dir, tmp_path, _listed_twice)
    with pytest.raises(SystemExit) as refused:
        training_main(
            ["pretrain", "--data", str(data), "--output", str(tmp_path / "ckpt"), "--model", "tiny", "--max-steps", "1"]
        )
    assert f"shards.2.path '{NLLB_SHARD}' is listed twice" in str(refused.value.code)
    assert "\n" not in str(refused.value.code)


def test_inspect_refuses_a_shard_listed_twice_in_one_line(run_dir, tmp_path):
    data = _corrupted_copy(run_dir, tmp_path, _listed_twice)
    with pytest.raises(SystemExit, match=r"shards\.2\.path .* is listed twice") as refused:
        beam_runner.main(["inspect", "summary", str(data)])
    assert "\n" not in str(refused.value.code)


def test_a_derived_pipeline_refuses_a_parent_with_a_shard_listed_twice_in_one_line(run_dir, tmp_path):
    parent = _corrupted_copy(run_dir, tmp_path, _listed_twice)
    argv = ["--pipeline=consistency", f"--input={parent}", "--model=tiny", f"--output={tmp_path / 'filtered'}"]
    with pytest.raises(SystemExit, match=r"shards\.2\.path .* is listed twice") as refused:
        beam_runner.main(argv)
    assert "\n" not in str(refused.value.code)


def _written(source: str, texts: list[str]) -> tuple:
    records = []
    for text in texts:
        record = new_pair(source, f"Where is {text}?", f"{text} is on the map.")
        record.update(id=f"{len(records):032x}", query_lang="en", passage_lang="en",
                      query_lang_score=0.9, passage_lang_score=0.9)
        records.append(record)
    path = shards.shard_path(source, 0, 1)
    return shards.write_shard(path, source, map(shards.packed_row, records), io.BytesIO())


def test_build_manifest_refuses_a_shard_written_twice():
    written = _written("sbert", ["Paris", "Rome"])
    with pytest.raises(ValidationError, match=r"shards\.1\.path 'shards/sbert/[^']+' is listed twice"):
        build_manifest("pretrain", PAIR_SCHEMA, {}, _counted(4), [written, written], sampling_alpha=0.5)
    assert build_manifest("pretrain", PAIR_SCHEMA, {}, _counted(2), [written], sampling_alpha=0.5).totals.output == 2


def _counted(inputs: int) -> FunnelReport:
    report = FunnelReport(0)
    report.count_input("sbert", inputs)
    return report


def test_build_manifest_names_the_source_whose_records_are_not_conserved():
    written = _written("sbert", ["Paris", "Rome"])
    with pytest.raises(ValidationError, match=r"sources\.sbert\n.*records not conserved: input 3 != output 2"):
        build_manifest("pretrain", PAIR_SCHEMA, {}, _counted(3), [written], sampling_alpha=0.5)


def test_rank_histograms_as_the_consistency_filter_writes_them_are_accepted(manifest):
    document = copy.deepcopy(manifest)
    document["sources"]["nllb"]["consistency_ranks"] = {"en": dict.fromkeys(RANK_BIN_LABELS, 1)}
    assert parse_manifest(json.dumps(document)).sources["nllb"].consistency_ranks["en"]["beyond"] == 1


def test_skipped_negatives_are_outside_the_record_totals_and_older_manifests_have_none(manifest):
    document = copy.deepcopy(manifest)
    document["sources"]["nllb"]["skipped_negatives"] = {"within_relative_margin": 7}
    assert parse_manifest(json.dumps(document)).sources["nllb"].skipped_negatives == {"within_relative_margin": 7}
    del document["sources"]["nllb"]["skipped_negatives"]
    assert parse_manifest(json.dumps(document)).sources["nllb"].skipped_negatives == {}
