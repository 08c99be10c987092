"""The forward and backward pass of one contrastive step, plain or with gradient caching.

Gradient caching (Gao et al., 2021, "Scaling Deep Contrastive Learning Batch
Size under Memory Limited Setup") makes the batch size independent of memory:
embed the batch chunk by chunk without a graph, backpropagate the loss to the
embeddings only, then re-run each chunk with a graph and push that chunk's
embedding gradient through it. Each chunk's random state is replayed so its
dropout masks are the ones the loss saw.
"""

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from training.encoder import Encoder, autocast
from training.loss import InfoNCELoss
from training.stream import PairBatch

Features = dict[str, torch.Tensor]


@dataclass(frozen=True)
class RngState:
    cpu: torch.Tensor
    cuda: torch.Tensor | None

    @classmethod
    def capture(cls, device: torch.device) -> "RngState":
        return cls(torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None)

    @contextmanager
    def replay(self, device: torch.device):
        with torch.random.fork_rng(devices=[device] if self.cuda is not None else []):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda, device)
            yield


def chunks(features: Features | None, size: int | None) -> list[Features]:
    """Row chunks of at most ``size`` (all rows if None), less the columns that are padding in every row of a chunk."""
    if features is None:
        return []
    mask = features["attention_mask"]
    size = size or len(mask)
    pieces = []
    for start in range(0, len(mask), size):
        rows = slice(start, start + size)
        width = int(mask[rows].any(dim=0).nonzero().max()) + 1
        pieces.append({name: tensor[rows, :width] for name, tensor in features.items()})
    return pieces


def embed(encoder: Encoder, features: Features) -> torch.Tensor:
    device = encoder.device
    with autocast(device):
        return encoder(features["input_ids"].to(device), features["attention_mask"].to(device))


def _sides(batch: PairBatch) -> list[Features | None]:
    return [batch.queries, batch.passages, batch.negatives]


def _batch_loss_inputs(batch: PairBatch) -> dict:
    """What the loss reads of a batch besides its embeddings."""
    return {
        "negative_counts": batch.negative_counts,
        "teacher_scores": batch.teacher_scores,
        "passage_keys": batch.passage_keys,
        "negative_keys": batch.negative_keys,
    }


def _concatenated(encoder: Encoder, parts: list[torch.Tensor]) -> torch.Tensor:
    if parts:
        return torch.cat(parts)
    # A side without rows (no hard negatives) still takes part in the loss's
    # collective operations, which must run on every rank.
    return torch.zeros(0, encoder.dimension, device=encoder.device, requires_grad=True)


def contrastive_backward(
    encoder: Encoder, batch: PairBatch, loss_fn: InfoNCELoss, chunk_size: int | None = None
) -> torch.Tensor:
    """Accumulates this rank's gradients for ``batch``; returns its share of the loss, detached.

    Without ``chunk_size`` every side is embedded in one pass with a graph; with
    it, gradient caching bounds memory by one chunk.
    """
    if chunk_size is None:
        embeddings = [
            _concatenated(encoder, [embed(encoder, part) for part in chunks(side, None)]) for side in _sides(batch)
        ]
        loss = loss_fn(*embeddings, **_batch_loss_inputs(batch))
        loss.backward()
        return loss.detach()

    device = encoder.device
    side_chunks = [chunks(side, chunk_size) for side in _sides(batch)]
    states: list[list[RngState]] = []
    cached = []
    with torch.no_grad():
        for pieces in side_chunks:
            states.append([])
            parts = []
            for piece in pieces:
                states[-1].append(RngState.capture(device))
                parts.append(embed(encoder, piece))
            cached.append(_concatenated(encoder, parts).detach().requires_grad_())
    loss = loss_fn(*cached, **_batch_loss_inputs(batch))
    loss.backward()
    for pieces, side_states, leaf in zip(side_chunks, states, cached, strict=True):
        gradients = leaf.grad.split([len(piece["input_ids"]) for piece in pieces]) if pieces else []
        for piece, state, gradient in zip(pieces, side_states, gradients, strict=True):
            with state.replay(device):
                embedded = embed(encoder, piece)
            embedded.backward(gradient)
    return loss.detach()
