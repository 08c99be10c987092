"""Training throughput: the loader, the tiny model on the CPU, and a base-size
model at a 32k batch against sentence-transformers' CachedMultipleNegativesRankingLoss.

    python benchmarks/training_throughput.py [--data DIR]
        loader: tokenised pairs/s with 0, 1 and 2 worker processes;
        tiny model: training pairs/s, plain and with gradient caching.
    python benchmarks/training_throughput.py --gpu [--model-shape base|small]
        randomly initialised XLM-R-shaped encoder (base: hidden 768, 12 layers;
        small: mE5-small's hidden 384, 12 layers), synthetic token ids, batch 32768
        with gradient caching and bf16 autocast: pairs/s and peak GPU memory, then
        the same model, weights and batch through sentence-transformers'
        CachedMultipleNegativesRankingLoss (backward inside bf16 autocast, as its
        trainer runs it) as the baseline.
    python benchmarks/training_throughput.py --gpu --device cpu --model-shape tiny \
        --batch-size 64 --chunk-size 16 --seq-len 16
        the same comparison's code path, small enough for a CPU.
"""

import argparse
import gc
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training.encoder import Encoder
from training.loss import InfoNCELoss
from training.shard_store import shards_by_source
from training.step import contrastive_backward
from training.stream import PairBatch, PairLoader, PairStream
from training.tiny import build_tiny_encoder, train_tokenizer

SHAPES = {
    "base": {
        "vocab_size": 250002,
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
    },
    "small": {
        "vocab_size": 250037,
        "hidden_size": 384,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 1536,
    },
    "tiny": {
        "vocab_size": 1000,
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 256,
    },
}
TEMPERATURE = 0.01


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loader_pairs_per_second(stream: PairStream, workers: int, batches: int) -> float:
    """Tokenised pairs per second once the workers are up (their start-up is excluded)."""
    loader = iter(PairLoader(stream, num_workers=workers, prefetch_factor=4))
    next(loader)
    started = time.perf_counter()
    pairs = sum(len(batch) for batch in islice(loader, batches))
    return pairs / (time.perf_counter() - started)


def optimiser_step(encoder: Encoder, optimizer: torch.optim.Optimizer) -> None:
    torch.nn.utils.clip_grad_norm_(encoder.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def timed(step, device: torch.device, warmup: int, steps: int) -> tuple[float, float]:
    """Seconds per step and peak accelerator memory in GiB (0 on a CPU)."""
    for _ in range(warmup):
        step()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    seconds = (time.perf_counter() - started) / steps
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    return seconds, peak


def tiny_training_pairs_per_second(encoder: Encoder, batches: list[PairBatch], chunk_size: int | None) -> float:
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=1e-4)
    loss_fn = InfoNCELoss(TEMPERATURE)
    remaining = iter(batches)

    def step():
        contrastive_backward(encoder, next(remaining), loss_fn, chunk_size)
        optimiser_step(encoder, optimizer)

    seconds, _ = timed(step, torch.device("cpu"), warmup=1, steps=len(batches) - 1)
    return sum(len(batch) for batch in batches[1:]) / (len(batches) - 1) / seconds


def cpu_benchmarks(args) -> Iterator[tuple[str, object]]:
    shards = shards_by_source([args.data])
    encoder = build_tiny_encoder(shards, seed=0)
    stream = PairStream(shards, encoder.tokenizer, batch_size=args.batch_size, max_passage_length=args.seq_len)
    for workers in (0, 1, 2):
        pairs_per_second = loader_pairs_per_second(stream, workers, args.loader_batches)
        yield f"loader, {workers} worker(s): tokenised pairs/s", pairs_per_second
    batches = list(islice(iter(stream), args.steps + 1))
    for chunk_size in (None, args.chunk_size):
        label = "one pass" if chunk_size is None else f"gradient cache, chunks of {chunk_size}"
        yield f"tiny model training, {label}: pairs/s", tiny_training_pairs_per_second(encoder, batches, chunk_size)


def save_random_encoder(shape: str, directory: Path) -> None:
    """An XLM-R-shaped encoder with random weights, saved so both contenders load the same ones."""
    from transformers import XLMRobertaConfig, XLMRobertaModel

    config = XLMRobertaConfig(
        **SHAPES[shape], max_position_embeddings=514, type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2
    )
    torch.manual_seed(0)
    # The tokenizer only travels with the model files: the batches are synthetic token ids.
    tokenizer = train_tokenizer(["synthetic token ids only"], vocab_size=64)
    Encoder(XLMRobertaModel(config), tokenizer).save_pretrained(directory)


def synthetic_batch(vocab_size: int, batch_size: int, seq_len: int) -> PairBatch:
    generator = torch.Generator().manual_seed(1)

    def side() -> dict[str, torch.Tensor]:
        ids = torch.randint(5, vocab_size, (batch_size, seq_len), generator=generator)
        ids[:, 0], ids[:, -1] = 0, 2
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    return PairBatch(0, "synthetic", batch_size, [str(i) for i in range(batch_size)], side(), side(), None)


def ours(directory: Path, batch: PairBatch, device: torch.device, args) -> tuple[float, float]:
    encoder = Encoder.from_pretrained(directory).to(device).train()
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=1e-4)
    loss_fn = InfoNCELoss(TEMPERATURE)

    def step():
        contrastive_backward(encoder, batch, loss_fn, args.chunk_size)
        optimiser_step(encoder, optimizer)

    return timed(step, device, args.warmup, args.timed_steps)


def sentence_transformers_baseline(
    directory: Path, batch: PairBatch, device: torch.device, args
) -> tuple[float, float]:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import CachedMultipleNegativesRankingLoss

    model = SentenceTransformer(str(directory), device=str(device)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss = CachedMultipleNegativesRankingLoss(model, scale=1 / TEMPERATURE, mini_batch_size=args.chunk_size)
    features = [{name: tensor.to(device) for name, tensor in side.items()} for side in (batch.queries, batch.passages)]

    def step():
        # Its trainer runs the loss, and with it the cached backward, inside the autocast context.
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss([dict(side) for side in features], None).backward()
        optimiser_step(model, optimizer)

    return timed(step, device, args.warmup, args.timed_steps)


def large_batch_benchmarks(args) -> Iterator[tuple[str, object]]:
    device = torch.device(args.device)
    yield "device", torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    batch = synthetic_batch(SHAPES[args.model_shape]["vocab_size"], args.batch_size, args.seq_len)
    with tempfile.TemporaryDirectory() as directory:
        save_random_encoder(args.model_shape, Path(directory))
        for name, contender in (
            ("embedmill", ours),
            ("sentence-transformers CachedMNRL", sentence_transformers_baseline),
        ):
            seconds, peak = contender(Path(directory), batch, device, args)
            yield f"{name}: pairs/s", args.batch_size / seconds
            yield f"{name}: peak memory GiB", peak
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", action="store_true", help="the large-batch comparison (on --device)")
    parser.add_argument("--device", default="cuda", help="with --gpu: where it runs (cpu for a dry run)")
    parser.add_argument("--model-shape", choices=sorted(SHAPES), default="base")
    parser.add_argument("--batch-size", type=int, help="default: 32768 with --gpu, else 64")
    parser.add_argument("--chunk-size", type=int, help="gradient-cache chunk; default: 512 with --gpu, else 16")
    parser.add_argument(
        "--seq-len", type=int, help="tokens per text; default: 128 with --gpu, else the passage limit 64"
    )
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--timed-steps", type=int, default=2)
    parser.add_argument(
        "--data", default="output", help="mined output for the CPU benchmarks (python beam_runner.py writes ./output)"
    )
    parser.add_argument("--loader-batches", type=int, default=40)
    parser.add_argument("--steps", type=int, default=10, help="timed tiny-model training steps")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    defaults = {"batch_size": (32768, 64), "chunk_size": (512, 16), "seq_len": (128, 64)}
    for name, (large, small) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, large if args.gpu else small)

    if args.gpu:
        results = {"shape": args.model_shape, "batch size": args.batch_size, "chunk size": args.chunk_size}
        measurements = large_batch_benchmarks(args)
    else:
        if not (Path(args.data) / "manifest.json").exists():
            raise SystemExit(f"no mined output at {args.data}: run python beam_runner.py first, or pass --data")
        results = {"threads": torch.get_num_threads(), "batch size": args.batch_size}
        measurements = cpu_benchmarks(args)
    for name, value in results.items():
        print(f"{name:<58} {value}")
    for name, value in measurements:  # printed as they come: a long run cut short keeps its first figures
        results[name] = value
        print(f"{name:<58} {value:,.1f}" if isinstance(value, float) else f"{name:<58} {value}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
