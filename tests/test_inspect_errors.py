"""``beam_runner.py inspect`` against what a hostile or careless user brings: every failure one
line, no traceback; nothing it prints or writes can be turned against its reader."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import lxml.html
import pytest
from apache_beam.io.filesystems import FileSystems

import beam_runner
from schemas.manifest import parse_manifest
from tests.conftest import REPO, write_lines

# Markup a hostile manifest may carry in any string the report shows.
SCRIPT = "<script>alert(1)</script>"
IMAGE = '<img src="x" onerror="alert(2)">'
BOLD = "<b onmouseover=alert(3)>pretrain"
# An escape sequence that would recolour the terminal and set its title.
ANSI = "\x1b[31m\x1b]0;owned\x07"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tatoeba_dir) -> Path:
    root = tmp_path_factory.mktemp("inspect_errors")
    write_lines(root / "in" / "qa.jsonl", [
        ["How long is the Thames?", "The Thames flows for about 346 kilometres to the North Sea."],
        ["How long is the Thames?", "The Thames flows for about 346 kilometres to the North Sea."],
        f"{ANSI}{{broken".encode(),
    ])
    sources = [f"sbert={root}/in/qa.jsonl", f"nllb={tatoeba_dir}/tatoeba.fra-eng"]
    output = root / "run"
    assert beam_runner.main([*(f"--source={s}" for s in sources), f"--output={output}", "--shard-size-mb=0.05"]) == 0
    return output


def inspect(capsys, *args) -> tuple[int, str]:
    code = beam_runner.main(["inspect", *map(str, args)])
    return code, capsys.readouterr().out


def refusal(capsys, *args) -> str:
    """The one-line message ``inspect`` exits with."""
    with pytest.raises(SystemExit) as exit_info:
        inspect(capsys, *args)
    message = str(exit_info.value.code)
    assert "\n" not in message and "Traceback" not in message
    return message


@pytest.fixture
def copy(run_dir, tmp_path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(run_dir, target)
    return target


def _edit_manifest(directory: Path, *replacements: tuple[str, str]) -> None:
    path = directory / "manifest.json"
    text = path.read_text()
    for old, new in replacements:
        assert old in text
        text = text.replace(old, new)
    path.write_text(text)


def test_a_directory_without_a_readable_manifest_is_one_line(run_dir, copy, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "a_file").write_text("not a run")
    for directory in (tmp_path / "empty", tmp_path / "missing", tmp_path / "a_file"):
        for command in ("summary", "verify", "sample", "report"):
            extra = ["--html", tmp_path / "r.html"] if command == "report" else []
            assert f"{directory} is not a finished run" in refusal(capsys, command, directory, *extra)
    assert "is not a finished run" in refusal(capsys, "diff", run_dir, tmp_path / "missing")
    (copy / "manifest.json").write_bytes(b"\xff\xfe{")
    assert "not a JSON object" in refusal(capsys, "summary", copy)
    (copy / "manifest.json").unlink()
    (copy / "manifest.json").mkdir()
    assert "manifest.json cannot be read" in refusal(capsys, "summary", copy)


def _damage(directory: Path, how: str, index: int = 0) -> str:
    """The path of the manifest's shard ``index``, whose file is now flipped, truncated or missing."""
    path = parse_manifest((directory / "manifest.json").read_text()).shards[index].path
    shard = directory / path
    if how == "flipped":
        data = bytearray(shard.read_bytes())
        for offset in range(len(data) // 3, len(data) - 8, len(data) // 7):
            data[offset] ^= 0xFF
        shard.write_bytes(bytes(data))
    elif how == "truncated":
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    else:
        shard.unlink()
    return path


def test_verify_says_truncated_missing_or_changed(copy, capsys):
    flipped, truncated, missing = (
        _damage(copy, how, index) for index, how in enumerate(("flipped", "truncated", "missing"))
    )
    code, text = inspect(capsys, "verify", copy)
    assert code == 1
    assert f"{flipped}: checksum mismatch: sha256 " in text
    assert f"{truncated}: truncated: " in text and "manifest says" in text
    assert f"{missing}: missing" in text
    # A cut-short shard gets one line, not a checksum and a read error besides.
    assert sum(line.startswith(f"{truncated}: ") for line in text.splitlines()) == 1


@pytest.mark.parametrize("how", ["flipped", "truncated", "missing"])
def test_sample_refuses_a_damaged_shard_in_one_line(copy, capsys, how):
    path = _damage(copy, how)
    message = refusal(capsys, "sample", copy, "-n", "5000")
    expected = {"flipped": "", "truncated": "truncated: ", "missing": "missing;"}[how]
    assert message.startswith(f"{path}: {expected}") and "inspect verify" in message


def test_sample_count_is_range_checked(run_dir, capsys):
    for n in ("0", "-3", "100000001"):
        assert refusal(capsys, "sample", run_dir, "-n", n).startswith("-n must be between 1 and ")


def test_sample_filters_name_what_the_run_has(run_dir, capsys):
    assert refusal(capsys, "sample", run_dir, "--source", "wiki") == (
        "no source 'wiki' in this run; its sources: nllb, sbert"
    )
    assert "its languages: en, fr" in refusal(capsys, "sample", run_dir, "--lang", "xx")


def test_rejected_accepts_only_the_runs_own_reasons(run_dir, capsys):
    for reason in ("../../etc/passwd", "a/b", "duplicate_pairs", ""):
        assert refusal(capsys, "sample", run_dir, "--rejected", reason) == (
            # lang_declared_mismatch: "Madame Hughes, voici Peter Brown." is English to fastText (0.65, fr 0.05);
            # near_duplicate: three short Tatoeba sentences near-copies of others ("Tout le monde va-t-il bien ?").
            f"no reason {reason!r} in this run; its reasons: duplicate_pair, invalid_json, lang_declared_mismatch, "
            "near_duplicate"
        )
    _, text = inspect(capsys, "sample", run_dir, "--rejected", "duplicate_pair")
    assert "How long is the Thames?" in text


def test_a_damaged_dead_letter_file_is_one_line_naming_its_line(copy, capsys):
    (dead_letters,) = (copy / "dead_letter").iterdir()
    with dead_letters.open("ab") as out:
        out.write(b'{"reason": "invalid_json", "payload": "\xff"}\n')
    message = refusal(capsys, "sample", copy, "--rejected", "invalid_json")
    assert message.startswith(f"dead_letter/{dead_letters.name}:2: cannot be read (") and "utf-8" in message


def test_a_manifest_reason_that_is_a_path_reads_nothing_outside(copy, capsys):
    (copy / "secret.jsonl").write_text(json.dumps({"query": "SECRET", "passage": "SECRET"}) + "\n")
    _edit_manifest(copy, ('"duplicate_pair"', '"../secret"'))
    code, text = inspect(capsys, "sample", copy, "--rejected", "../secret")
    assert code == 0 and "SECRET" not in text and text.strip() == "no matching rows"


def test_output_cannot_drive_the_terminal(run_dir, copy, capsys):
    _, dead = inspect(capsys, "sample", copy, "--rejected", "invalid_json")
    assert "\x1b" not in dead and "\x07" not in dead
    assert "payload: \\x1b[31m\\x1b]0;owned\\x07{broken" in dead
    _edit_manifest(copy, ('"sbert"', json.dumps("sbert" + ANSI)))
    _, summary = inspect(capsys, "summary", copy)
    assert "\x1b" not in summary and "sbert\\x1b[31m" in summary
    _, changes = inspect(capsys, "diff", run_dir, copy)
    assert "\x1b" not in changes and "source sbert\\x1b[31m\\x1b]0;owned\\x07 output: 0 -> 1" in changes


def test_report_escapes_every_string_from_the_manifest(copy, tmp_path, capsys):
    _edit_manifest(
        copy,
        ('"sbert"', json.dumps(SCRIPT)),
        ('"fr"', json.dumps(IMAGE)),
        ('"duplicate_pair"', json.dumps(SCRIPT + "reason")),
        ('"pipeline": "pretrain"', f'"pipeline": {json.dumps(BOLD)}'),
    )
    page = tmp_path / "report.html"
    assert inspect(capsys, "report", copy, "--html", page)[0] == 0
    tree = lxml.html.fromstring(page.read_bytes())
    assert not tree.xpath("//script | //img | //b")
    assert not [name for element in tree.iter() for name in element.attrib if name.startswith("on")]
    text = tree.text_content()
    assert SCRIPT in text and IMAGE in text and BOLD in text


def test_report_never_writes_over_a_directory(run_dir, tmp_path, capsys):
    keep = tmp_path / "reports" / "keep.txt"
    keep.parent.mkdir()
    keep.write_text("mine")
    for target in (keep.parent, f"{keep.parent}/"):
        assert "is a directory" in refusal(capsys, "report", run_dir, "--html", target)
    assert keep.read_text() == "mine"
    page = tmp_path / "new" / "deeper" / "report.html"
    assert inspect(capsys, "report", run_dir, "--html", page)[0] == 0 and page.read_text().startswith("<!doctype")
    assert [path.name for path in page.parent.iterdir()] == ["report.html"]


def test_a_reader_that_leaves_early_ends_the_command_quietly(run_dir):
    # As `| head -2`: two lines read, then the pipe closed under a writer with much more to say;
    # a process of its own, so that the interpreter's last flush at exit is covered too.
    sample = subprocess.Popen(
        [sys.executable, str(REPO / "beam_runner.py"), "inspect", "sample", str(run_dir), "-n", "1000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
    )
    lines = [sample.stdout.readline() for _ in range(2)]
    sample.stdout.close()
    errors = sample.stderr.read().decode()
    assert sample.wait() == 141 and lines[0].startswith(b"[") and errors == ""


def test_a_pipe_closed_before_the_first_write_ends_the_command_quietly(run_dir, monkeypatch):
    read_end, write_end = os.pipe()
    os.close(read_end)
    with open(write_end, "w") as pipe:
        monkeypatch.setattr(sys, "stdout", pipe)
        assert beam_runner.main(["inspect", "summary", str(run_dir)]) == 141


def test_a_gs_run_without_a_manifest_or_a_shard_is_one_line(run_dir, gcs_bucket, capsys):
    assert refusal(capsys, "summary", f"{gcs_bucket}/nothing/here") == (
        f"{gcs_bucket}/nothing/here is not a finished run: no manifest.json there (or no such directory)"
    )
    remote = f"{gcs_bucket}/inspect-errors/run"
    missing = parse_manifest((run_dir / "manifest.json").read_text()).shards[0].path
    for path in run_dir.rglob("*"):
        if path.is_file() and path.relative_to(run_dir).as_posix() != missing:
            with FileSystems.create(f"{remote}/{path.relative_to(run_dir).as_posix()}") as out:
                out.write(path.read_bytes())
    code, text = inspect(capsys, "verify", remote)
    assert code == 1 and text == f"{missing}: missing\n"
    assert refusal(capsys, "sample", remote, "-n", "5000").startswith(f"{missing}: missing;")
