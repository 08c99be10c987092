"""Every option is checked before any work starts: one line naming it, and an earlier run in --output untouched."""

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import beam_runner
from pipelines.options import MiningOptions
from schemas.manifest import Manifest
from tests.conftest import REPO

SBERT = f"--source=sbert={REPO / 'mining' / 'samples' / 'sbert'}/*"


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(path.relative_to(directory)): path.read_bytes() for path in directory.rglob("*") if path.is_file()}


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory) -> Path:
    """A finished run, mined with a mining option spelled as Beam spells its own."""
    output = tmp_path_factory.mktemp("earlier")
    assert beam_runner.main([SBERT, f"--output={output}", "--shard_size_mb=0.002", "--near_dup=off"]) == 0
    return output


def test_mining_options_are_accepted_with_underscores(earlier_run):
    manifest = Manifest.model_validate_json((earlier_run / "manifest.json").read_text("utf-8"))
    assert manifest.options["shard_size_mb"] == 0.002
    assert manifest.options["near_dup"] == "off"
    assert len(manifest.shards) > 1


BAD_OPTIONS = [
    (["--near-dup-rounds=0"], "--near-dup-rounds"),
    (["--batch-size=many"], "--batch-size"),
    (["--shard-compression=gzip"], "--shard-compression"),
    (["--lid-model=/nope/lid.176.bin"], "--lid-model"),
    (["--lid-model=/tmp"], "--lid-model"),
    ([f"--lid-model={REPO / 'pyproject.toml'}"], "pyproject.toml: not a fastText model"),
    (["--shard-size-mb=0"], "--shard-size-mb"),
    (["--shard_size_mb=-1"], "--shard-size-mb"),
    (["--shard-size-mb=nan"], "--shard-size-mb"),
    (["--shard-size-mb=inf"], "--shard-size-mb"),
    (["--max-line-bytes=-1"], "--max-line-bytes"),
    (["--max-line-bytes=0"], "--max-line-bytes"),
    (["--batch-size=0"], "--batch-size"),
    (["--encode-batch-size=0"], "--encode-batch-size"),
    (["--encode_batch_size=many"], "--encode-batch-size"),
    (["--pool-size=0"], "--pool-size"),
    (["--max-query-chars=0"], "--max-query-chars"),
    (["--max-passage-chars=-5"], "--max-passage-chars"),
    (["--rejected-sample-size=-1"], "--rejected-sample-size"),
    (["--num-negatives=0"], "--num-negatives"),
    (["--near-dup-threshold=0"], "--near-dup-threshold"),
    (["--near-dup-threshold=1"], "--near-dup-threshold"),
    (["--near-dup-threshold=nan"], "--near-dup-threshold"),
    (["--lid-threshold=1.5"], "--lid-threshold"),
    (["--lid-threshold=-0.1"], "--lid-threshold"),
    (["--lid-min-bytes=-1"], "--lid-min-bytes"),
    (["--near-dup-num-perm=0"], "--near-dup-num-perm"),
    (["--near-dup-ngram=0"], "--near-dup-ngram"),
    (["--top-k=0"], "--top-k"),
    (["--top-k=-3"], "--top-k"),
    (["--top-k=2.5"], "--top-k"),
    (["--top-k=nan"], "--top-k"),
    (["--rank-window=50:10"], "--rank-window"),
    (["--max-score=1.5"], "--max-score must be between -1 and 1"),
    (["--max-score=nan"], "--max-score"),
    (["--relative-margin=-0.1"], "--relative-margin must be between 0 and 1"),
    (["--relative_margin=2"], "--relative-margin"),
    (["--sampling-alpha=-0.5"], "--sampling-alpha"),
    (["--sampling-alpha=2"], "--sampling-alpha"),
    (["--pipeline=consistency", "--model=python:no_such_module_here:encode"], "--model"),
    (["--pipeline=consistency", "--model=/nope/checkpoint"], "--model"),
    (["--pipeline=hardnegatives", "--model=st:/nope/model"], "--model"),
    (["--pipeline=hardnegatives", "--model=st:python:nope"], "--model st:python:nope: no such file or directory"),
    (["--pipeline=consistency", "--model=python:json"], "--model python:json: python:MODULE:CALLABLE needs"),
    (["--pipeline=consistency", "--model=st:"], "--model st:: no path or model name"),
]


@pytest.mark.parametrize("bad, option", BAD_OPTIONS, ids=[" ".join(bad) for bad, _ in BAD_OPTIONS])
def test_bad_option_fails_in_one_line_and_leaves_the_earlier_run(earlier_run, bad, option):
    before = snapshot(earlier_run)
    derived = any(arg.startswith("--pipeline=") for arg in bad)
    inputs = [f"--input={earlier_run}"] if derived else [SBERT]
    with pytest.raises(SystemExit) as caught:
        beam_runner.main([*inputs, f"--output={earlier_run}", "--overwrite", *bad])
    message = str(caught.value)
    assert option in message and "\n" not in message, message
    assert snapshot(earlier_run) == before


@pytest.fixture()
def corpus_copy(earlier_run, tmp_path) -> Path:
    copy = tmp_path / "corpus"
    shutil.copytree(earlier_run, copy)
    return copy


def _overlapping_runs(earlier_run: Path, corpus: Path, tmp_path: Path) -> list[tuple[list[str], Path, str]]:
    """(arguments, the run they must leave untouched, the option the message names)."""
    derived = ["--model=python:tests.test_option_checks:never_called", "--overwrite"]
    link = tmp_path / "link"
    link.symlink_to(earlier_run)
    return [
        (["--pipeline=consistency", f"--input={earlier_run}", f"--output={earlier_run}/.", *derived], earlier_run,
         "--input"),
        (["--pipeline=consistency", f"--input={earlier_run}/", f"--output={earlier_run}/shards/..", *derived],
         earlier_run, "--input"),
        (["--pipeline=consistency", f"--input={earlier_run}", f"--output={link}", *derived], earlier_run, "--input"),
        (["--pipeline=consistency", f"--input={earlier_run}", f"--output={earlier_run.parent}", *derived],
         earlier_run, "--input"),
        (["--pipeline=hardnegatives", f"--input={earlier_run}", f"--corpus={corpus}", f"--output={corpus}",
          *derived], corpus, "--corpus"),
        ([f"--source=sbert={earlier_run}/shards/**", f"--output={earlier_run}", "--overwrite"], earlier_run,
         "--source"),
        ([SBERT, f"--exclude={earlier_run}/manifest.json", f"--output={earlier_run}", "--overwrite"], earlier_run,
         "--exclude"),
    ]


def never_called(texts, kind):
    raise AssertionError("a refused run must not embed anything")


def test_output_that_is_contains_or_lies_inside_an_input_is_refused(earlier_run, corpus_copy, tmp_path):
    for args, untouched, option in _overlapping_runs(earlier_run, corpus_copy, tmp_path):
        before = snapshot(untouched)
        with pytest.raises(SystemExit) as caught:
            beam_runner.main(args)
        message = str(caught.value)
        assert f"overlaps {option}" in message and "\n" not in message, (args, message)
        assert snapshot(untouched) == before, args


def test_output_matched_by_a_source_glob_is_refused(tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(REPO / "mining" / "samples" / "sbert", corpus)
    for output in (corpus / "out", tmp_path / "corp", tmp_path):
        pattern = f"{tmp_path}/corp*/*.jsonl" if output.name == "corp" else f"{corpus}/*.jsonl"
        with pytest.raises(SystemExit, match="overlaps --source"):
            beam_runner.main([f"--source=sbert={pattern}", f"--output={output}"])
    assert not (corpus / "out").exists() and not (tmp_path / "corp").exists()


def test_output_that_is_a_file_is_refused(tmp_path):
    output = tmp_path / "run.arrow"
    output.write_bytes(b"not a directory")
    with pytest.raises(SystemExit, match="is a file"):
        beam_runner.main([SBERT, f"--output={output}/", "--overwrite"])
    assert output.read_bytes() == b"not a directory"


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["--pipeline=instruct", "--output=OUT", "--help"]])
def test_help_lists_every_pipeline_option_and_runs_nothing(argv, tmp_path, capsys):
    argv = [item.replace("OUT", str(tmp_path / "out")) for item in argv]
    assert beam_runner.main(argv) == 0
    shown = capsys.readouterr().out
    parser = argparse.ArgumentParser()
    MiningOptions._add_argparse_args(parser)
    names = [name for action in parser._actions for name in action.option_strings if name.startswith("--")]
    assert len(names) > 60 and all(name in shown for name in names)
    assert "(default: 512)" in shown and "--help-beam" in shown
    assert not (tmp_path / "out").exists()
    assert all(re.search(r"default:\s", block) for block in _option_blocks(shown)), "an option without its default"


def _option_blocks(shown: str) -> list[str]:
    """Each option's lines of a --help, -h itself aside."""
    blocks = re.split(r"\n  (?=-)", shown.split("\n\n", 2)[-1].split("\nEvery option")[0])
    return [block for block in blocks if block.startswith("--") or block.startswith("-n")]


@pytest.mark.parametrize("command", ["summary", "sample", "report"])
def test_every_inspect_option_shows_its_default_under_the_name_it_was_called_by(command, capsys):
    assert beam_runner.main(["--help"], prog="embedmill mine") == 0
    assert capsys.readouterr().out.startswith("usage: embedmill mine ")
    with pytest.raises(SystemExit) as done:
        beam_runner.embedmill(["inspect", command, "--help"])
    assert done.value.code == 0
    shown = capsys.readouterr().out
    assert shown.startswith(f"usage: embedmill inspect {command} ")
    assert _option_blocks(shown) and all(re.search(r"default:\s", block) for block in _option_blocks(shown))


def test_help_beam_lists_beams_own_options(capsys):
    assert beam_runner.main(["--help-beam"]) == 0
    shown = capsys.readouterr().out
    assert all(name in shown for name in ("--runner", "--project", "--temp_location", "--direct_num_workers"))
    assert "--near-dup-threshold" not in shown


def test_the_embedmill_command_reaches_every_tool(earlier_run, tmp_path):
    """The console script the install adds: mining, inspect and training commands, each with its own help."""
    command = Path(sys.executable).parent / "embedmill"
    assert command.exists(), "pip install -e . adds the embedmill console script"

    def embedmill(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(command), *args], capture_output=True, text=True, cwd=tmp_path, timeout=300)

    listing = embedmill("--help")
    assert listing.returncode == 0 and all(name in listing.stdout for name in ("mine", "inspect", "finetune", "split"))
    assert "--near-dup-threshold" in embedmill("mine", "--help").stdout
    summary = embedmill("inspect", "summary", str(earlier_run))
    assert summary.returncode == 0 and summary.stdout.startswith("pretrain: ")
    assert "--heldout-fraction" in embedmill("split", "--help").stdout
    unknown = embedmill("bogus")
    assert unknown.returncode == 1 and unknown.stderr.strip().startswith("unknown command 'bogus'; commands: mine")


def test_training_helps_show_the_defaults_of_split_and_evaluate(capsys):
    for command, option, default in (("split", "--seed", "0"), ("evaluate", "--batch-size", "64")):
        with pytest.raises(SystemExit) as done:
            beam_runner.embedmill([command, "--help"])
        assert done.value.code == 0
        block = next(block for block in _option_blocks(capsys.readouterr().out) if block.startswith(option))
        assert f"(default: {default})" in block
