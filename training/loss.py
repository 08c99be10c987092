"""InfoNCE with in-batch negatives, as in E5 and sentence-transformers'
MultipleNegativesRankingLoss, over the global batch of every rank."""

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from training.distributed import gather_with_grad


def _summed_cross_entropy(queries: torch.Tensor, candidates: torch.Tensor, labels: torch.Tensor, temperature: float):
    return F.cross_entropy(queries @ candidates.T / temperature, labels, reduction="sum")


class InfoNCELoss:
    """Each query against every passage and hard negative of the global batch.

    Embeddings are L2-normalised, so scores are cosine similarities divided by
    the temperature. Each rank returns its queries' share of the global mean,
    so the ranks' gradients add up to the gradient of the whole batch's loss.
    Scores are computed for ``rows_per_chunk`` queries at a time and recomputed
    in the backward pass, so memory grows with the batch, not its square
    (a 32k batch's full score matrix alone would be 4 GiB, and autograd keeps several).
    """

    def __init__(self, temperature: float = 0.01, rows_per_chunk: int = 1024):
        self.temperature = temperature
        self.rows_per_chunk = rows_per_chunk

    def __call__(self, queries: torch.Tensor, passages: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        all_passages, first = gather_with_grad(passages)
        all_negatives, _ = gather_with_grad(negatives)
        candidates = torch.cat([all_passages, all_negatives]).float()
        labels = torch.arange(first, first + len(queries), device=queries.device)
        total = sum(
            checkpoint(
                _summed_cross_entropy,
                queries[start : start + self.rows_per_chunk].float(),
                candidates,
                labels[start : start + self.rows_per_chunk],
                self.temperature,
                use_reentrant=False,
                preserve_rng_state=False,  # nothing random to replay
            )
            for start in range(0, len(queries), self.rows_per_chunk)
        )
        return total / len(all_passages)
