"""Split a mined output into a training part and a held-out part, both valid mined outputs.

A row is held out by a keyed hash of its id, so the split does not depend on
shard layout or row order. Each part gets its own shards (same paths, rows
still sorted by id) and a manifest whose accounting stays exact: the part's
input is the original output, and the rows that went to the other part are
counted as dropped (``held_out`` / ``kept_for_training``). Other per-source
fields (the sampling weight) carry over: each part keeps about the same share
of every source.
"""

import datetime
import hashlib
import os
import posixpath
from collections import Counter

import fsspec
import numpy as np
import pyarrow as pa
from fsspec.implementations.local import LocalFileSystem

from schemas import pairs as f
from schemas.manifest import MANIFEST_NAME, Manifest, Shard, SourceTotals, Totals
from training.data import ShardRef, ShardStore, join, read_manifest

_ROWS_PER_RECORD_BATCH = 1024
_PARTS = {"train": "held_out", "heldout": "kept_for_training"}  # part -> why the other part's rows are missing


def held_out_mask(ids: list[str], fraction: float, seed: int) -> np.ndarray:
    key = seed.to_bytes(8, "little", signed=True)
    draws = [int.from_bytes(hashlib.blake2b(i.encode(), key=key, digest_size=8).digest(), "little") for i in ids]
    return np.asarray(draws, dtype=np.float64) / 2.0**64 < fraction


def _encoded(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=_ROWS_PER_RECORD_BATCH)
    return sink.getvalue().to_pybytes()


def _write(url: str, data: bytes) -> None:
    fs, path = fsspec.core.url_to_fs(url)
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    with fs.open(path, "wb") as stream:
        stream.write(data)


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
    shards = {part: [] for part in _PARTS}
    kept = {part: Counter() for part in _PARTS}
    for shard in manifest.shards:
        ref = ShardRef(join(source, shard.path), shard.rows, shard.bytes, shard.sha256)
        # Every column, not only those training reads: each part is a full mined output.
        with pa.ipc.open_stream(pa.memory_map(store.local_path(ref))) as reader:
            table = reader.read_all()
        mask = held_out_mask(table.column(f.ID).to_pylist(), fraction, seed)
        for part, rows in (("train", table.filter(pa.array(~mask))), ("heldout", table.filter(pa.array(mask)))):
            data = _encoded(rows)
            _write(join(targets[part], shard.path), data)
            languages = Counter()
            for sides in zip(
                rows.column(f.QUERY_LANG).to_pylist(), rows.column(f.PASSAGE_LANG).to_pylist(), strict=True
            ):
                languages.update(set(sides))  # as the miner counts: a row once per language on either side
            shards[part].append(
                Shard(
                    path=shard.path,
                    rows=rows.num_rows,
                    bytes=len(data),
                    sha256=hashlib.sha256(data).hexdigest(),
                    source=shard.source,
                    languages=dict(sorted(languages.items())),
                )
            )
            kept[part][shard.source] += rows.num_rows

    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    manifests = {}
    for part, reason in _PARTS.items():
        output = sum(kept[part].values())
        sources = {}
        for name, totals in manifest.sources.items():
            languages = Counter()
            for shard in shards[part]:
                if shard.source == name:
                    languages.update(shard.languages)
            sources[name] = SourceTotals.model_validate(
                {
                    **totals.model_dump(),
                    "input": totals.output,
                    "output": kept[part][name],
                    "dropped": {reason: totals.output - kept[part][name]} if totals.output > kept[part][name] else {},
                    "dead_letter": 0,
                    "languages": dict(sorted(languages.items())),
                }
            )
        manifests[part] = Manifest(
            pipeline=manifest.pipeline,
            created=created,
            options={
                "split_of": source,
                "part": part,
                "heldout_fraction": fraction,
                "seed": seed,
                "mined_with": manifest.options,
            },
            schema=manifest.schema_,
            shards=shards[part],
            totals=Totals(
                input=manifest.totals.output,
                output=output,
                dropped={reason: manifest.totals.output - output} if manifest.totals.output > output else {},
            ),
            sources=sources,
        )
        _write(join(targets[part], MANIFEST_NAME), manifests[part].to_json().encode("utf-8"))
    return manifests
