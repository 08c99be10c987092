"""In-batch retrieval on held-out pairs: does each query rank its own passage first?"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from schemas import pairs as f
from training.shard_store import ShardStore, Source, shards_by_source
from training.encoder import Encoder
from training.prompts import Prompts


def held_out_rows(directories: Sequence[str], store: ShardStore, max_pairs_per_source: int) -> dict[str, dict]:
    """The first pairs of each source in storage order (shuffled already: sorted by content hash)."""
    rows = {}
    for name, shards in shards_by_source(directories).items():
        queries, passages = [], []
        for batch in Source(name, shards).record_batches(store):
            batch = batch.slice(0, max_pairs_per_source - len(queries))
            queries += batch.column(f.QUERY).to_pylist()
            passages += batch.column(f.PASSAGE).to_pylist()
            if len(queries) >= max_pairs_per_source:
                break
        rows[name] = {"query": queries, "passage": passages}
    return rows


def in_batch_retrieval(
    encoder: Encoder,
    rows: dict[str, dict],
    *,
    batch_size: int = 64,
    temperature: float = 0.01,
    prompts: dict[str, Prompts] | None = None,
) -> dict[str, float]:
    """Top-1 accuracy and InfoNCE loss of queries against the passages of their batch.

    Batches are cut from one source at a time, as in training; ``chance`` is the
    accuracy of a random ranking.
    """
    prompts = prompts or {}
    loss = correct = batches = pairs = 0
    per_source = {}
    for source, texts in rows.items():
        source_prompts = prompts.get(source, encoder.prompts)
        queries = encoder.encode(texts["query"], "query", prompts=source_prompts)
        passages = encoder.encode(texts["passage"], "passage", prompts=source_prompts)
        source_correct = source_pairs = 0
        for start in range(0, len(queries), batch_size):
            scores = queries[start : start + batch_size] @ passages[start : start + batch_size].T
            if len(scores) < 2:
                continue
            labels = torch.arange(len(scores))
            loss += F.cross_entropy(scores / temperature, labels, reduction="sum").item()
            source_correct += int((scores.argmax(dim=1) == labels).sum())
            source_pairs += len(scores)
            batches += 1
        if source_pairs:
            per_source[f"eval_accuracy/{source}"] = source_correct / source_pairs
        correct += source_correct
        pairs += source_pairs
    if not pairs:
        raise ValueError("no held-out batch of two or more pairs")
    # A random ranking finds the passage with probability 1/len(batch): summed over a batch's pairs, 1.
    return {
        "eval_loss": loss / pairs,
        "eval_accuracy": correct / pairs,
        "eval_chance": batches / pairs,
        "eval_pairs": pairs,
        **per_source,
    }
