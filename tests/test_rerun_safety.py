"""A rerun is written beside the earlier run and replaces it only when complete, locally and on gs://."""

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from apache_beam.io.filesystems import FileSystems

import beam_runner
from pipelines import io
from schemas.manifest import MANIFEST_NAME, Manifest
from tests.conftest import REPO


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file of a run, hidden staging directories left out."""
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file() and not path.relative_to(directory).parts[0].startswith(io.STAGING_PREFIX)
    }


def without_manifest(files: dict[str, bytes]) -> dict[str, bytes]:
    """A run's files but its manifest, which also records when it was written."""
    return {path: data for path, data in files.items() if path != MANIFEST_NAME}


def staged_shards(output: Path) -> list[Path]:
    return list(output.glob(f"{io.STAGING_PREFIX}*/shards/*/*.arrow"))


def mine(source: str, output: str, *extra: str) -> Manifest:
    assert beam_runner.main([source, f"--output={output}", "--near-dup=off", *extra]) == 0
    return beam_runner.load_manifest(output)


def test_interrupted_rerun_leaves_the_earlier_run_and_its_leftovers_harm_no_later_run(tatoeba_dir, tmp_path):
    source = f"--source=nllb={tatoeba_dir}/tatoeba.fra-eng"
    output = tmp_path / "out"
    mine(source, str(output), "--shard-size-mb=0.05")
    before = snapshot(output)
    # Small shards: the rerun writes many, so it is stopped while its staging directory fills.
    rerun = subprocess.Popen(
        [sys.executable, "beam_runner.py", source, f"--output={output}", "--overwrite", "--near-dup=off",
         "--shard-size-mb=0.001"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        while rerun.poll() is None and not staged_shards(output):
            time.sleep(0.01)
    finally:
        rerun.kill()
        rerun.wait()
    assert staged_shards(output), "the rerun wrote its shards beside the earlier run, and was stopped doing so"
    assert snapshot(output) == before
    assert beam_runner.main(["inspect", "verify", str(output)]) == 0

    # Leftovers alone are no earlier run: a run into their directory needs no --overwrite, and removes them.
    (leftover,) = output.glob(f"{io.STAGING_PREFIX}*")
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    leftover.rename(fresh / leftover.name)
    manifest = mine(source, str(fresh), "--shard-size-mb=0.05")
    assert [path.name for path in fresh.iterdir() if path.name.startswith(".")] == []
    assert without_manifest(snapshot(fresh)) == without_manifest(before), "same input and options, same files"
    assert manifest.totals.output > 900


def test_a_failed_publish_is_finished_by_its_retry(tatoeba_dir, tmp_path):
    source = f"--source=nllb={tatoeba_dir}/tatoeba.fra-eng"
    old, new = tmp_path / "old", tmp_path / "new"
    mine(source, str(old), "--shard-size-mb=0.02")
    new_manifest = mine(source, str(new), "--shard-size-mb=0.05")
    expected = snapshot(new)
    staging = old / f"{io.STAGING_PREFIX}retry"
    shutil.copytree(new, staging)
    # What a shard write that was interrupted and retried leaves beside the shard: no part of the run.
    (staging / new_manifest.shards[0].path).with_name(".interrupted.arrow.tmp-0").write_bytes(b"partial")
    # As an earlier attempt left it: the first new shard in place already; and a directory where the
    # last one must go, so that its move fails half-way through this publish.
    first_shard = new_manifest.shards[0].path
    shutil.copyfile(new / first_shard, old / first_shard)
    blocker = old / new_manifest.shards[-1].path
    blocker.mkdir(parents=True)
    (blocker / "in-the-way").write_bytes(b"")
    with pytest.raises(OSError):
        io.publish_run(str(staging), str(old))
    assert not (old / MANIFEST_NAME).exists(), "no manifest ever names old and new shards together"
    blocker.rmdir()
    io.publish_run(str(staging), str(old))
    io.publish_run(str(staging), str(old))
    assert snapshot(old) == expected
    assert not staging.exists()
    assert beam_runner.main(["inspect", "verify", str(old)]) == 0


def _gcs_files(directory: str) -> dict[str, bytes]:
    prefix = directory + "/"
    files = {}
    for path in io.match_files(f"{directory}/**"):
        with FileSystems.open(path) as stream:
            files[path[len(prefix):]] = stream.read()
    return files


@pytest.mark.filterwarnings("ignore")
def test_rerun_on_gcs_replaces_the_run_only_when_checked_and_complete(gcs_bucket, tatoeba_dir):
    for suffix in ("fra", "eng"):
        lines = (tatoeba_dir / f"tatoeba.fra-eng.{suffix}").read_bytes().splitlines(keepends=True)
        with FileSystems.create(f"{gcs_bucket}/rerun-in/tatoeba.fra-eng.{suffix}") as out:
            out.write(b"".join(lines[:200]))
    source = f"--source=nllb={gcs_bucket}/rerun-in/tatoeba.fra-eng"
    output = f"{gcs_bucket}/rerun-out"
    first = mine(source, output, "--shard-size-mb=0.005")
    before = _gcs_files(output)
    for bad, option in (
        ([f"--lid-model={gcs_bucket}/models/missing.ftz"], "--lid-model"),
        (["--near-dup-rounds=0"], "--near-dup-rounds"),
    ):
        with pytest.raises(SystemExit, match=option):
            beam_runner.main([source, f"--output={output}", "--overwrite", *bad])
    with pytest.raises(SystemExit, match="overlaps --source"):
        beam_runner.main([source, f"--output={gcs_bucket}/rerun-in/", "--overwrite"])
    assert _gcs_files(output) == before

    second = mine(source, output, "--overwrite", "--shard-size-mb=0.02")
    assert len(second.shards) < len(first.shards)
    files = _gcs_files(output)
    assert {shard.path for shard in second.shards} == {path for path in files if path.startswith("shards/")}
    assert not [path for path in files if io.STAGING_PREFIX in path or ".tmp-" in path]
    assert files[MANIFEST_NAME] == second.to_json().encode("utf-8")
    assert beam_runner.main(["inspect", "verify", output]) == 0
