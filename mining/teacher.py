"""Teacher scores: a cross-encoder's score of each row's (query, passage) and (query, negative) pairs, aligned
with ``[passage, *negatives]``, the target of distillation in fine-tuning (``training.loss``).

Rows are scored in groups fixed by their ids (``pipelines.derived.FixedGroups``), not in whatever batches a
runner forms. Pure functions; the model is ``training.cross_encoder``'s.
"""

import math

import numpy as np

from mining.records import Drop
from schemas import pairs as f
from schemas.reasons import NONFINITE_TEACHER_SCORE


class TeacherOutputError(ValueError):
    """A teacher gave other than one score per pair: its code's problem, told in one line."""


def scored_pairs(records: list[dict]) -> tuple[list[str], list[str], list[int]]:
    """The (query, text) pairs of ``records``, row after row, and each row's number of pairs."""
    queries, texts, counts = [], [], []
    for record in records:
        group = [record[f.PASSAGE], *record[f.NEGATIVES]]
        queries.extend([record[f.QUERY]] * len(group))
        texts.extend(group)
        counts.append(len(group))
    return queries, texts, counts


def score_rows(score, records: list[dict], pairs_per_call: int) -> list[list[float]]:
    """Each row's scores of its ``scored_pairs``, by ``score(queries, texts)`` called on ``pairs_per_call`` pairs
    at a time; TeacherOutputError where a call gives other than one score per pair."""
    queries, texts, counts = scored_pairs(records)
    flat: list[float] = []
    for start in range(0, len(queries), pairs_per_call):
        called = queries[start : start + pairs_per_call]
        returned = score(called, texts[start : start + pairs_per_call])
        try:
            # A torch tensor (on any device, with or without its graph) as well as anything numpy reads.
            scores = np.asarray(returned.detach().cpu() if hasattr(returned, "detach") else returned, dtype=np.float32)
        except (TypeError, ValueError, RuntimeError) as error:
            raise TeacherOutputError(f"the teacher gave {type(returned).__name__}, not numbers ({error})") from None
        if scores.ndim == 2 and scores.shape[1] == 1:
            scores = scores[:, 0]
        if scores.shape != (len(called),):
            raise TeacherOutputError(f"the teacher gave scores of shape {scores.shape} for {len(called)} pairs, not one each")
        flat.extend(scores.tolist())
    ends = np.cumsum(counts)
    return [flat[end - count : end] for count, end in zip(counts, ends, strict=True)]


def attach(record: dict, scores: list[float]) -> dict | Drop:
    """The row with its teacher scores; a Drop where one is NaN or infinite as the float32 it is stored as (no
    target to distil)."""
    if not all(map(math.isfinite, scores)):
        return Drop(record, NONFINITE_TEACHER_SCORE, f"scores {scores}")
    return {**record, f.TEACHER_SCORES: scores}
