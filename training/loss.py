"""InfoNCE with in-batch negatives, as in E5 and sentence-transformers'
MultipleNegativesRankingLoss, over the global batch of every rank; plus, for
rows with teacher scores, distillation over each row's own group, as in E5's
fine-tuning. Given passage keys, a candidate equal to a row's own passage (another
row's copy of it, or a hard negative) is no negative of that row: its logit is
masked, as GISTEmbedLoss masks what its guide ranks above the positive."""

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from training.distributed import gather_with_grad


def _summed_cross_entropy(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    row_keys: torch.Tensor | None,
    candidate_keys: torch.Tensor | None,
):
    logits = queries @ candidates.T / temperature
    if row_keys is not None:
        duplicates = row_keys[:, None] == candidate_keys[None, :]
        duplicates[torch.arange(len(labels), device=labels.device), labels] = False  # the row's own passage stays
        logits = logits.masked_fill(duplicates, float("-inf"))
    return F.cross_entropy(logits, labels, reduction="sum")


class InfoNCELoss:
    """Each query against every passage and hard negative of the global batch.

    Embeddings are L2-normalised, so scores are cosine similarities divided by
    the temperature. Each rank returns its queries' share of the global mean,
    so the ranks' gradients add up to the gradient of the whole batch's loss.
    Scores are computed for ``rows_per_chunk`` queries at a time and recomputed
    in the backward pass, so memory grows with the batch, not its square
    (a 32k batch's full score matrix alone would be 4 GiB, and autograd keeps several).
    """

    def __init__(self, temperature: float = 0.01, rows_per_chunk: int = 1024, distill_weight: float = 1.0):
        self.temperature = temperature
        self.rows_per_chunk = rows_per_chunk
        self.distill_weight = distill_weight

    def __call__(
        self,
        queries: torch.Tensor,
        passages: torch.Tensor,
        negatives: torch.Tensor,
        negative_counts: torch.Tensor | None = None,
        teacher_scores: torch.Tensor | None = None,
        passage_keys: torch.Tensor | None = None,
        negative_keys: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``teacher_scores`` (see ``PairBatch``) add ``distill_weight`` times KL(teacher || student) over each
        scored row's group [passage, *its negatives]; ``negative_counts`` says which negatives are whose.
        ``passage_keys`` (per row) and ``negative_keys`` (per negative; None: no negatives), every rank's or
        none's: candidates whose key is a row's passage key, other than its own passage, are masked for it."""
        all_passages, first = gather_with_grad(passages)
        all_negatives, _ = gather_with_grad(negatives)
        candidates = torch.cat([all_passages, all_negatives]).float()
        labels = torch.arange(first, first + len(queries), device=queries.device)
        row_keys = candidate_keys = None
        if passage_keys is not None:
            row_keys = passage_keys.to(queries.device)
            if negative_keys is None:
                negative_keys = torch.zeros(0, dtype=torch.long)
            # Keys carry no gradient; the gather is only the one that takes uneven shares.
            candidate_keys = torch.cat(
                [gather_with_grad(row_keys)[0], gather_with_grad(negative_keys.to(queries.device))[0]]
            )
        total = sum(
            checkpoint(
                _summed_cross_entropy,
                queries[start : start + self.rows_per_chunk].float(),
                candidates,
                labels[start : start + self.rows_per_chunk],
                self.temperature,
                None if row_keys is None else row_keys[start : start + self.rows_per_chunk],
                candidate_keys,
                use_reentrant=False,
                preserve_rng_state=False,  # nothing random to replay
            )
            for start in range(0, len(queries), self.rows_per_chunk)
        )
        if teacher_scores is not None and self.distill_weight:
            total = total + self.distill_weight * self.distillation(
                queries, passages, negatives, negative_counts, teacher_scores
            )
        return total / len(all_passages)

    def distillation(
        self,
        queries: torch.Tensor,
        passages: torch.Tensor,
        negatives: torch.Tensor,
        negative_counts: torch.Tensor,
        teacher_scores: torch.Tensor,
    ) -> torch.Tensor:
        """Summed over this rank's scored rows: KL(softmax(teacher) || softmax(student / temperature))."""
        device = queries.device
        counts = negative_counts.to(device)
        teacher = teacher_scores.to(device).float()
        width = teacher.shape[1] - 1
        offsets = torch.cumsum(counts, 0) - counts
        columns = torch.arange(width, device=device)
        own = columns[None, :] < counts[:, None]
        if len(negatives):
            picked = negatives[(offsets[:, None] + columns[None, :]).clamp(max=len(negatives) - 1)]
        else:
            picked = passages.new_zeros(len(queries), width, passages.shape[-1])
        group = torch.cat([passages[:, None, :], picked], dim=1).float()
        student = torch.einsum("rd,rgd->rg", queries.float(), group) / self.temperature
        scored = ~teacher[:, 0].isnan()  # rows without teacher scores are not distilled
        valid = torch.cat([torch.ones_like(own[:, :1]), own], dim=1) & ~teacher.isnan() & scored[:, None]
        # Only inside scored rows are candidates masked, so no softmax sees a row of -inf alone.
        masked = ~valid & scored[:, None]
        log_student = torch.log_softmax(student.masked_fill(masked, float("-inf")), dim=1)
        target = torch.softmax(torch.nan_to_num(teacher, nan=0.0).masked_fill(masked, float("-inf")), dim=1)
        terms = target * (torch.log(target.clamp_min(1e-30)) - log_student)
        return torch.where(valid, terms, torch.zeros_like(terms)).sum()
