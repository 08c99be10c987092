"""The distributed loss test's shared batch and the body of each spawned rank."""

from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from training.distributed import all_sum, sum_gradients
from training.encoder import Encoder
from training.loss import InfoNCELoss
from training.step import contrastive_backward
from training.stream import PairBatch, passage_keys

TEMPERATURE = 0.05
TOPICS = ["rivers", "mountains", "cities", "music", "food", "sport", "trees", "stars"]
QUERIES = [f"question {i} about {topic}" for i, topic in enumerate(TOPICS)]
PASSAGES = [f"an answer on {topic} number {i}" for i, topic in enumerate(TOPICS)]
# The last is row 4's passage, in capitals: masked for row 4, whose rank does not hold it.
NEGATIVES = ["an unrelated answer", "another wrong answer", PASSAGES[4].upper()]
# Uneven shares, and hard negatives on one rank only: rows 0-2 own the negatives.
RANK_ROWS = [slice(0, 3), slice(3, 8)]


def tokenized(encoder: Encoder, texts: list[str]) -> dict[str, torch.Tensor]:
    encoded = encoder.tokenizer(texts, padding=True, return_tensors="pt")
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def batch(encoder: Encoder, rows: slice = slice(None)) -> PairBatch:
    queries, passages = QUERIES[rows], PASSAGES[rows]
    negatives = NEGATIVES if (rows.start or 0) == 0 else []
    return PairBatch(
        step=0,
        source="test",
        global_size=len(QUERIES),
        ids=queries,
        queries=tokenized(encoder, queries),
        passages=tokenized(encoder, passages),
        negatives=tokenized(encoder, negatives) if negatives else None,
        passage_keys=passage_keys(passages),
        negative_keys=passage_keys(negatives) if negatives else None,
    )


def gradients(encoder: Encoder) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in encoder.named_parameters() if p.grad is not None}


def run_rank(rank: int, world_size: int, model_dir: str, output_dir: str, chunk_sizes: list) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{Path(output_dir) / 'rendezvous'}", rank=rank, world_size=world_size
    )
    try:
        for chunk_size in chunk_sizes:
            encoder = Encoder.from_pretrained(model_dir)
            loss = contrastive_backward(encoder, batch(encoder, RANK_ROWS[rank]), InfoNCELoss(TEMPERATURE), chunk_size)
            sum_gradients(encoder)
            results = {**gradients(encoder), "loss": all_sum(loss).reshape(1)}
            save_file(results, str(Path(output_dir) / f"rank{rank}-chunk{chunk_size}.safetensors"))
    finally:
        dist.destroy_process_group()
