"""Small mined outputs and models for the training tests, built without Beam or downloads."""

import hashlib
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import fsspec
import pyarrow as pa
import torch

from schemas.manifest import MANIFEST_NAME, Manifest
from schemas.pairs import PAIR_SCHEMA, schema_description
from training.encoder import Encoder
from training.shard_store import join
from training.tiny import tiny_model, train_tokenizer

REPO = Path(__file__).resolve().parent.parent


@contextmanager
def one_thread():
    """The test models are too small to gain from a second thread, and on a busy machine two spin-wait."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def pair_rows(source: str, count: int, negatives: int = 0) -> list[dict]:
    rows = []
    for i in range(count):
        rows.append(
            {
                "id": hashlib.sha256(f"{source}/{i}".encode()).hexdigest()[:32],
                "query": f"{source} question {i} about topic {i % 7}",
                "passage": f"{source} answer {i}: " + " ".join(f"word{(i * j) % 97}" for j in range(1 + i % 9)),
                "negatives": [f"{source} wrong answer {i}/{k}" for k in range(negatives)],
                "source": source,
                "query_lang": "en",
                "passage_lang": "en",
                "query_lang_score": 0.9,
                "passage_lang_score": 0.9,
            }
        )
    return sorted(rows, key=lambda row: row["id"])


def shard_bytes(rows: list[dict], schema: pa.Schema = PAIR_SCHEMA) -> bytes:
    table = pa.Table.from_pylist(rows, schema=schema)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        writer.write_table(table, max_chunksize=64)
    return sink.getvalue().to_pybytes()


def write_mined_output(
    directory: str, rows_by_source: dict[str, list[dict]], shards_per_source: int = 2, schema: pa.Schema = PAIR_SCHEMA
) -> str:
    """A mined output directory (local path or fsspec URL) as the pretrain pipeline lays it out (``schema``: its shards')."""
    shards, sources = [], {}
    total = sum(len(rows) for rows in rows_by_source.values())
    weights = {name: len(rows) ** 0.5 for name, rows in rows_by_source.items()}
    for name, rows in rows_by_source.items():
        for index in range(shards_per_source):
            part = rows[index::shards_per_source]
            data = shard_bytes(part, schema)
            path = f"shards/{name}/{name}-{index:05d}-of-{shards_per_source:05d}.arrow"
            with fsspec.open(join(directory, path), "wb", auto_mkdir=True) as stream:
                stream.write(data)
            shards.append(
                {
                    "path": path,
                    "rows": len(part),
                    "bytes": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "source": name,
                    "languages": {"en": len(part)} if part else {},
                }
            )
        sources[name] = {
            "input": len(rows),
            "output": len(rows),
            "languages": {"en": len(rows)},
            "sampling_weight": weights[name] / (sum(weights.values()) or 1),  # an output of no rows weighs 0
        }
    manifest = Manifest.model_validate(
        {
            "pipeline": "pretrain",
            "created": "2026-01-01T00:00:00+00:00",
            "options": {},
            "schema": schema_description(),
            "shards": shards,
            "totals": {"input": total, "output": total},
            "sources": sources,
        }
    )
    with fsspec.open(join(directory, MANIFEST_NAME), "w", auto_mkdir=True) as stream:
        stream.write(manifest.to_json())
    return directory


def tiny_encoder(texts: list[str], *, hidden_size: int = 32, seed: int = 0, **config_options) -> Encoder:
    tokenizer = train_tokenizer(texts, vocab_size=400, max_length=128)
    model = tiny_model(tokenizer, hidden_size=hidden_size, seed=seed, **config_options)
    return Encoder(model, tokenizer)


def mine_samples(output: Path) -> Path:
    """The bundled sbert, nllb and ccnews samples, mined by the real pipeline."""
    sources = [f"--source={kind}=mining/samples/{kind}/*" for kind in ("sbert", "nllb", "ccnews")]
    subprocess.run(
        [sys.executable, "beam_runner.py", *sources, "--output", str(output)], cwd=REPO, check=True, capture_output=True
    )
    return output
