"""``beam_runner.py inspect``: summary, verify, sample, diff, report, on real runs."""

import json
import shutil
from pathlib import Path

import pytest

import beam_runner
from schemas.manifest import ManifestError, parse_manifest
from tests.conftest import write_lines


def _mine(output: Path, sources: list[str], *extra: str) -> Path:
    assert beam_runner.main([*(f"--source={s}" for s in sources), f"--output={output}", *extra]) == 0
    return output


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tatoeba_dir) -> Path:
    root = tmp_path_factory.mktemp("inspect")
    write_lines(root / "in" / "qa.jsonl", [
        ["Wie hoch ist der Kölner Dom?", "Der Kölner Dom ist gut 157 Meter hoch und prägt das Stadtbild."],
        ["How long is the Thames?", "The Thames flows for about 346 kilometres to the North Sea."],
        ["How long is the Thames?", "The Thames flows for about 346 kilometres to the North Sea."],
        b"{broken",
    ])
    sources = [f"sbert={root}/in/qa.jsonl", f"nllb={tatoeba_dir}/tatoeba.fra-eng"]
    return _mine(root / "run", sources, "--shard-size-mb=0.05")


def inspect(capsys, *args: str) -> tuple[int, str]:
    code = beam_runner.main(["inspect", *map(str, args)])
    return code, capsys.readouterr().out


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(run_dir, target)
    return target


def test_summary_text_and_json(run_dir, capsys):
    code, text = inspect(capsys, "summary", run_dir)
    assert code == 0
    assert "funnel" in text and "dedup" in text and "duplicate_pair 1" in text and "dead_letter 1" in text
    assert "query chars" in text and "shards:" in text
    code, raw = inspect(capsys, "summary", run_dir, "--json")
    data = json.loads(raw)
    manifest = parse_manifest((run_dir / "manifest.json").read_text())
    assert data["funnel"][0]["remaining"] == manifest.totals.input
    assert data["funnel"][-1]["remaining"] == manifest.totals.output
    french = next(row for row in data["languages"] if row["language"] == "fr")
    assert french["output"] >= 990 and 5 < french["query_chars"]["p50"] < french["query_chars"]["p90"] < 200
    assert data["shards"]["count"] == len(manifest.shards) > 1


def test_verify_passes_on_an_intact_run(run_dir, capsys):
    code, text = inspect(capsys, "verify", run_dir)
    assert code == 0 and "verified" in text


def test_verify_names_each_broken_shard(run_dir, tmp_path, capsys):
    broken = _copy(run_dir, tmp_path)
    manifest = parse_manifest((broken / "manifest.json").read_text())
    corrupted, missing = (broken / manifest.shards[0].path), (broken / manifest.shards[1].path)
    data = bytearray(corrupted.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupted.write_bytes(bytes(data))
    missing.unlink()
    (broken / "shards" / "nllb" / "stray.arrow").write_bytes(b"not listed")
    code, text = inspect(capsys, "verify", broken)
    assert code == 1
    assert f"{manifest.shards[0].path}: checksum mismatch: sha256" in text
    assert f"{manifest.shards[1].path}: missing" in text
    assert "shards/nllb/stray.arrow: present but not in the manifest" in text


def test_truncated_or_edited_manifest_is_one_clear_line(run_dir, tmp_path, capsys):
    broken = _copy(run_dir, tmp_path)
    text = (broken / "manifest.json").read_text()
    (broken / "manifest.json").write_text(text[: len(text) // 2])
    with pytest.raises(SystemExit, match="not a JSON object"):
        inspect(capsys, "verify", broken)
    (broken / "manifest.json").write_text(text.replace('"rows": ', '"rows": -', 1))
    with pytest.raises(SystemExit, match=r"shards\.0\.rows"):
        inspect(capsys, "summary", broken)
    with pytest.raises(ManifestError, match="schema_version 0"):
        parse_manifest(text.replace('"schema_version": 1', '"schema_version": 0'))
    with pytest.raises(ManifestError, match="inside the output directory"):
        parse_manifest(text.replace('"path": "shards/', '"path": "/etc/', 1))
    with pytest.raises(ManifestError, match="inside the output directory"):
        parse_manifest(text.replace('"path": "shards/', '"path": "gs://elsewhere/', 1))


def test_sample_rows_and_removed_records(run_dir, capsys):
    _, first = inspect(capsys, "sample", run_dir, "--lang", "fr", "-n", "3", "--seed", "7")
    _, again = inspect(capsys, "sample", run_dir, "--lang", "fr", "-n", "3", "--seed", "7")
    _, other = inspect(capsys, "sample", run_dir, "--lang", "fr", "-n", "3", "--seed", "8")
    assert first == again != other and first.count("[nllb fr->en]") == 3
    _, rejected = inspect(capsys, "sample", run_dir, "--rejected", "duplicate_pair")
    assert "How long is the Thames?" in rejected and "duplicate_pair" in rejected
    _, dead = inspect(capsys, "sample", run_dir, "--rejected", "invalid_json")
    assert "{broken" in dead


def test_diff_of_two_runs(run_dir, tmp_path, tatoeba_dir, capsys):
    other = _mine(tmp_path / "other", [f"nllb={tatoeba_dir}/tatoeba.fra-eng"], "--lid-threshold=0.9")
    _, text = inspect(capsys, "diff", run_dir, other)
    assert "option lid_threshold: 0.5 -> 0.9" in text
    assert "source sbert output: 2 -> 0 (-2)" in text
    assert "shard removed shards/sbert/sbert-00000-of-00001.arrow" in text
    _, same = inspect(capsys, "diff", run_dir, run_dir)
    assert same.strip() == "no differences"


def test_report_is_self_contained(run_dir, tmp_path, capsys):
    """Rendered in Chromium by tests/test_html_report.py."""
    page = tmp_path / "report.html"
    code, _ = inspect(capsys, "report", run_dir, "--html", page)
    html = page.read_text()
    assert code == 0 and html.count("<svg") >= 4 and "Funnel" in html
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html
    assert "<script" not in html and "<link" not in html and "<img" not in html
