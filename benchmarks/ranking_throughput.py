"""Rows per second of ``--pipeline consistency`` and ``--pipeline hardnegatives`` against the same numpy ranking
called directly, in fixed batches of --batch-size, side by side.

    python benchmarks/ranking_throughput.py [--rows 10000] [--batch-size 512] [--repeats 3] [--blas-threads 1]

Input: the Tatoeba pairs of benchmarks/mining_throughput.py, mined once with the default pipeline. Both sides
embed with the same cheap encoder (``word_vectors``: hashed words, so that the ranking, not the encoder,
is what is timed) through ``training.evaluation.load_encoder``, and rank with the same functions
(``mining.consistency.passage_ranks``; ``mining.hard_negatives.block_candidate_arrays`` per corpus block). The
pipeline runs in this process on one worker; its start-up, shard reading and writing are in its time, the
direct side's shard reading in its. Runs are interleaved, the median of --repeats is printed; target ratio >= 0.7.
"""

import argparse
import contextlib
import io
import logging
import math
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
from threadpoolctl import threadpool_limits

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import beam_runner  # noqa: E402
from benchmarks.mining_throughput import build_input  # noqa: E402
from mining import consistency, dedup, hard_negatives  # noqa: E402
from pipelines import derived  # noqa: E402
from pipelines import hard_negatives as hard_negatives_pipeline  # noqa: E402
from schemas import pairs as f  # noqa: E402
from schemas.manifest import Manifest  # noqa: E402
from training.evaluation import load_encoder  # noqa: E402

DIMENSIONS = 256
ENCODER = "python:benchmarks.ranking_throughput:word_vectors"
POOL_SIZE = consistency.ConsistencyOptions.pool_size
RANK_WINDOW = hard_negatives.HardNegativeOptions.rank_window
NUM_NEGATIVES = hard_negatives.HardNegativeOptions.num_negatives


def word_vectors(texts: list[str], kind: str) -> np.ndarray:
    """A cheap encoder: hashed lower-cased words (load_encoder normalises the rows)."""
    vectors = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in text.casefold().split():
            vectors[row, zlib.crc32(word.encode("utf-8")) % DIMENSIONS] += 1.0
    vectors[:, 0] += 1e-3  # no all-zero row for an empty text
    return vectors


def batches(items: list, size: int):
    return (items[start : start + size] for start in range(0, len(items), size))


def read_rows(run: Path) -> list[dict]:
    manifest = Manifest.model_validate_json((run / "manifest.json").read_text("utf-8"))
    return [
        row
        for shard in manifest.shards
        for row in pa.ipc.open_stream((run / shard.path).read_bytes()).read_all().to_pylist()
    ]


def embed(encoder, texts: list[str], kind: str, batch_size: int) -> np.ndarray:
    return np.concatenate([encoder.encode(batch, kind) for batch in batches(texts, batch_size)])


def direct_consistency(run: Path, batch_size: int) -> int:
    """The consistency filter's numpy called directly: the pool, then each batch of pairs ranked against it."""
    encoder = load_encoder(ENCODER)
    rows = sorted(read_rows(run), key=lambda row: row[f.ID])
    pool_rows = sorted(rows, key=lambda row: consistency.pool_key(0, row[f.ID]))[:POOL_SIZE]
    pool = dict(
        zip(
            (dedup.exact_passage_key(row[f.PASSAGE]) for row in pool_rows),
            embed(encoder, [row[f.PASSAGE] for row in pool_rows], "passage", batch_size),
            strict=True,
        )
    )
    pool_keys = np.array(sorted(pool), dtype=np.uint64)
    pool_matrix = np.stack([pool[key] for key in sorted(pool)])
    top_k = consistency.resolve_top_k(consistency.ConsistencyOptions.top_k, len(pool_keys))
    kept = 0
    for batch in batches(rows, batch_size):
        queries = encoder.encode([row[f.QUERY] for row in batch], "query")
        passages = encoder.encode([row[f.PASSAGE] for row in batch], "passage")
        keys = np.array([dedup.exact_passage_key(row[f.PASSAGE]) for row in batch], dtype=np.uint64)
        ranks = consistency.passage_ranks(queries, passages, keys, pool_matrix, pool_keys)
        kept += sum(int(rank) <= top_k for rank in ranks)
    return kept


def direct_hard_negatives(run: Path, batch_size: int) -> int:
    """Hard-negative mining's numpy called directly: each batch of queries against each corpus block."""
    encoder = load_encoder(ENCODER)
    rows = sorted(read_rows(run), key=lambda row: row[f.ID])
    corpus = {}
    for row in rows:
        key = dedup.normalized_passage_key(row[f.PASSAGE])
        corpus[key] = min(corpus.get(key, row[f.PASSAGE]), row[f.PASSAGE])
    keys = sorted(corpus)
    matrix = embed(encoder, [corpus[key] for key in keys], "passage", batch_size)
    blocks = max(1, math.ceil(len(keys) / hard_negatives_pipeline.CORPUS_BLOCK_ROWS))
    key_array = np.array(keys, dtype=np.uint64)
    in_block = [np.flatnonzero(key_array % blocks == block) for block in range(blocks)]
    positives = {}
    for row in rows:
        positives.setdefault(dedup.normalized_query_key(row[f.QUERY]), set()).add(
            dedup.normalized_passage_key(row[f.PASSAGE])
        )
    window = hard_negatives.parse_rank_window(RANK_WINDOW)
    negatives = 0
    for batch in batches(rows, batch_size):
        queries = encoder.encode([row[f.QUERY] for row in batch], "query")
        excluded = [
            np.array(sorted(positives[dedup.normalized_query_key(row[f.QUERY])]), dtype=np.uint64) for row in batch
        ]
        per_block = [
            hard_negatives.block_candidate_arrays(queries, excluded, matrix[chosen], key_array[chosen], window[1])
            for chosen in in_block
        ]
        for found in zip(*per_block, strict=True):
            candidates = hard_negatives.with_texts(hard_negatives.merge_candidate_arrays(list(found), window[1]), corpus)
            negatives += len(hard_negatives.choose_negatives(candidates, window, NUM_NEGATIVES)[0])
    return negatives


def run_beam(*args: str) -> None:
    with contextlib.redirect_stdout(io.StringIO()):  # the run's summary
        assert beam_runner.main(list(args)) == 0


def pipeline_run(pipeline: str, run: Path, output: Path, batch_size: int) -> None:
    run_beam(f"--pipeline={pipeline}", f"--input={run}", f"--output={output}", f"--model={ENCODER}",
             f"--batch-size={batch_size}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10000)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--blas-threads", type=int, default=derived.BLAS_THREADS, help="both sides' BLAS threads")
    args = parser.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    derived.BLAS_THREADS = args.blas_threads
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        build_input(work / "pairs.jsonl", args.rows)
        mined = work / "mined"
        run_beam(f"--source=sbert={work / 'pairs.jsonl'}", f"--output={mined}", "--near-dup=off")
        rows = Manifest.model_validate_json((mined / "manifest.json").read_text("utf-8")).totals.output
        direct = {"consistency": direct_consistency, "hardnegatives": direct_hard_negatives}
        seconds = {(pipeline, side): [] for pipeline in direct for side in ("beam", "numpy")}
        for repeat in range(args.repeats):
            for pipeline, call in direct.items():
                start = time.perf_counter()
                pipeline_run(pipeline, mined, work / f"{pipeline}-{repeat}", args.batch_size)
                seconds[pipeline, "beam"].append(time.perf_counter() - start)
                start = time.perf_counter()
                with threadpool_limits(limits=args.blas_threads, user_api="blas"):
                    call(mined, args.batch_size)
                seconds[pipeline, "numpy"].append(time.perf_counter() - start)
        print(f"{rows} rows, --batch-size {args.batch_size}, pool {POOL_SIZE}, {args.blas_threads} BLAS thread(s), "
              f"one worker; median of {args.repeats}")  # fmt: skip
        for pipeline in direct:
            beam, numpy = (statistics.median(seconds[pipeline, side]) for side in ("beam", "numpy"))
            print(f"{pipeline:<14} beam {rows / beam:>8,.0f} rows/s ({beam:.2f} s)   numpy {rows / numpy:>8,.0f} "
                  f"rows/s ({numpy:.2f} s)   ratio {numpy / beam:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
