"""--shard-format: runs in the Arrow IPC file format and in Parquet, read by the tools users reach for (polars,
duckdb, Hugging Face datasets) and by every reader of ours (inspect, the trainer, split, a derived pipeline)."""

import json
import os
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.dataset as ds
import pytest

import beam_runner
from schemas.manifest import Manifest
from training.holdout import split_output
from training.shard_store import ShardStore, shards_by_source
from training.stream import PairStream
from training.tiny import train_tokenizer

EXTENSIONS = {"file": ".arrow", "parquet": ".parquet"}


@pytest.fixture(scope="module", params=["file", "parquet"])
def run(request, tmp_path_factory) -> tuple[str, Path, Manifest]:
    output = tmp_path_factory.mktemp(request.param) / "run"
    sources = [f"--source={kind}=mining/samples/{kind}/*" for kind in ("sbert", "nllb")]
    assert beam_runner.main([*sources, f"--output={output}", f"--shard-format={request.param}", "--near-dup=off"]) == 0
    return request.param, output, Manifest.model_validate_json((output / "manifest.json").read_text())


def test_a_run_in_either_format_is_verified_and_named_for_it(run):
    shard_format, output, manifest = run
    assert manifest.options["shard_format"] == shard_format
    assert all(shard.path.endswith(EXTENSIONS[shard_format]) for shard in manifest.shards)
    assert beam_runner.main(["inspect", "verify", str(output)]) == 0


def test_polars_duckdb_and_datasets_read_the_run_directly(run):
    shard_format, output, manifest = run
    pattern = str(output / "shards" / "*" / f"*{EXTENSIONS[shard_format]}")
    scan = pl.scan_parquet if shard_format == "parquet" else pl.scan_ipc
    frame = scan(pattern).collect()
    assert frame.height == manifest.totals.output and frame["negatives"].dtype == pl.List(pl.String)
    if shard_format == "parquet":
        counted = duckdb.sql(f"select count(*), count(distinct id) from read_parquet('{pattern}')").fetchall()[0]
    else:  # duckdb's own IPC reader is an extension it would download; pyarrow's dataset hands it the file
        shards = ds.dataset([str(output / shard.path) for shard in manifest.shards], format="ipc")
        counted = duckdb.from_arrow(shards).aggregate("count(*), count(distinct id)").fetchall()[0]
    assert counted == (manifest.totals.output, manifest.totals.output)

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import datasets

    rows = datasets.load_dataset(str(output), split="train", cache_dir=str(output.parent / "hf"))
    assert sorted(rows["id"]) == sorted(frame["id"].to_list())


def test_the_trainer_split_and_a_derived_pipeline_read_either_format(run, tmp_path):
    shard_format, output, manifest = run
    shards = shards_by_source([str(output)])
    tokenizer = train_tokenizer(["query: a", "passage: b"], vocab_size=100, max_length=32)
    stream = PairStream(shards, tokenizer, batch_size=8, cache_dir=tmp_path / "cache")
    batch = stream.materialise(next(stream.schedule.batches()))
    assert 0 < len(batch.ids) == batch.global_size <= 8 and batch.queries["input_ids"].shape[0] == len(batch.ids)
    assert sum(ShardStore().table(ref).num_rows for refs in shards.values() for ref in refs) == manifest.totals.output

    parts = split_output(str(output), str(tmp_path / "train"), str(tmp_path / "heldout"), 0.2, 0)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import datasets

    for part in ("train", "heldout"):
        assert beam_runner.main(["inspect", "verify", str(tmp_path / part)]) == 0
        # The part's dataset card names its shards as they are written, in the parent's format.
        rows = datasets.load_dataset(str(tmp_path / part), split="train", cache_dir=str(tmp_path / "hf"))
        assert len(rows) == parts[part].totals.output > 0

    scored = tmp_path / "scored"
    assert beam_runner.main(["--pipeline=teacher", f"--input={output}", f"--output={scored}",
                             "--model=python:tests.test_teacher:label_teacher"]) == 0  # fmt: skip
    scored_manifest = json.loads((scored / "manifest.json").read_text())
    assert scored_manifest["totals"]["output"] == manifest.totals.output
    assert scored_manifest["options"]["shard_format"] == "stream"  # a derived run's own --shard-format
