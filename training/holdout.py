"""Split a mined output into a training part and a held-out part, both valid mined outputs.

A row is held out by a keyed hash of its id, so the split does not depend on
shard layout or row order. Each part gets its own shards (same paths, rows
still sorted by id) and a manifest built, as the miner builds one, from the
part's own rows (languages, lengths, instructions, consistency ranks). Its
accounting stays exact: the part's input is the original output, and the rows
that went to the other part are counted as dropped (``held_out`` /
``kept_for_training``). The sampling weights carry over: each part keeps about
the same share of every source.
"""

import hashlib
import io
import os

import fsspec
import numpy as np
import pyarrow as pa
from fsspec.implementations.local import LocalFileSystem

from mining import run_store, shards
from mining.dataset_card import dataset_card
from mining.report import FunnelReport, build_manifest
from schemas import pairs as f
from schemas.manifest import DATASET_CARD, Manifest
from training.shard_store import STORAGE, ShardRef, ShardStore, join, read_manifest

_PARTS = {"train": "held_out", "heldout": "kept_for_training"}  # part -> why the other part's rows are missing


def held_out_mask(ids: list[str], fraction: float, seed: int) -> np.ndarray:
    key = seed.to_bytes(8, "little", signed=True)
    draws = [int.from_bytes(hashlib.blake2b(i.encode(), key=key, digest_size=8).digest(), "little") for i in ids]
    return np.asarray(draws, dtype=np.float64) / 2.0**64 < fraction


def _refuse_non_empty(url: str) -> None:
    fs, path = fsspec.core.url_to_fs(url)
    if fs.exists(path) and fs.ls(path):
        raise FileExistsError(f"{url} is not empty")


def _location(url: str) -> tuple[str, str]:
    """The filesystem and absolute path ``url`` names, links resolved where local."""
    fs, path = fsspec.core.url_to_fs(url)
    if isinstance(fs, LocalFileSystem):
        path = os.path.realpath(path)
    return fs.unstrip_protocol("/"), path.rstrip("/")


def _overlap(first: str, second: str) -> bool:
    """Whether the directories are one, or one holds the other."""
    (fs_a, a), (fs_b, b) = _location(first), _location(second)
    return fs_a == fs_b and (a == b or a.startswith(b + "/") or b.startswith(a + "/"))


def split_output(source: str, train: str, heldout: str, fraction: float, seed: int = 0) -> dict[str, Manifest]:
    if not 0 < fraction < 1:
        raise ValueError(f"the held-out fraction must lie strictly between 0 and 1, not {fraction}")
    if not -(2**63) <= seed < 2**63:
        raise ValueError(f"the seed must fit in 64 bits, not {seed}")
    if _overlap(train, heldout):
        raise ValueError(f"--train {train} and --heldout {heldout} must be two directories, neither inside the other")
    for option, target in (("--train", train), ("--heldout", heldout)):
        if _overlap(target, source):
            raise ValueError(f"{option} {target} must lie outside the input {source}, and not hold it")
    for target in (train, heldout):
        _refuse_non_empty(target)
    manifest = read_manifest(source)
    targets = {"train": train, "heldout": heldout}
    store = ShardStore()
    reports = {part: FunnelReport(sample_size=0) for part in _PARTS}
    written = {part: [] for part in _PARTS}
    for name, totals in manifest.sources.items():
        for report in reports.values():
            report.count_input(name, totals.output)
    shard_format = manifest.options.get("shard_format", "stream")  # the parent's: its shard paths name it
    for shard in manifest.shards:
        ref = ShardRef(join(source, shard.path), shard.rows, shard.bytes, shard.sha256)
        # Every column, not only those training reads: each part is a full mined output.
        table = run_store.read_table(pa.memory_map(store.local_path(ref)))
        mask = held_out_mask(table.column(f.ID).to_pylist(), fraction, seed)
        for part, rows in (("train", table.filter(pa.array(~mask))), ("heldout", table.filter(pa.array(mask)))):
            stream = io.BytesIO()  # a part's shard is at most its parent's
            packed = _packed_and_counted(rows, reports[part])
            written[part].append(
                shards.write_shard(shard.path, shard.source, packed, stream, rows.schema, shard_format=shard_format)
            )
            STORAGE.write_atomically(join(targets[part], shard.path), stream.getvalue())
            if rows.num_rows < table.num_rows:
                reports[part].count_dropped(shard.source, _PARTS[part], table.num_rows - rows.num_rows)
    weights = {name: totals.sampling_weight for name, totals in manifest.sources.items()}
    manifests = {}
    for part in _PARTS:
        options = {
            "split_of": source, "part": part, "heldout_fraction": fraction, "seed": seed,
            "mined_with": manifest.options,
        }
        manifests[part] = build_manifest(
            manifest.pipeline, manifest.schema_, options, reports[part], written[part], sampling_alpha=None,
            weights=weights, teacher=manifest.teacher,
        )
        STORAGE.write_atomically(join(targets[part], DATASET_CARD), dataset_card(manifests[part]).encode("utf-8"))
        run_store.write_manifest(STORAGE, targets[part], manifests[part])
    return manifests


def _packed_and_counted(rows: pa.Table, report: FunnelReport):
    """``rows`` as ``shards.packed_row``s, a record batch of them decoded at a time, counted into ``report``."""
    for batch in rows.to_batches():
        records = batch.to_pylist()
        _count_rows(report, records)
        yield from (shards.packed_row(record, rows.schema) for record in records)


def _count_rows(report: FunnelReport, records: list[dict]) -> None:
    """What the miner's report counts of the rows it writes: their instructions and consistency ranks."""
    for record in records:
        if f.INSTRUCTION in record:
            report.add_instruction(record[f.SOURCE], record[f.INSTRUCTION])
        if record.get(f.CONSISTENCY_RANK) is not None:
            report.count_rank(record[f.SOURCE], record[f.QUERY_LANG], record[f.CONSISTENCY_RANK])
