"""sentence-transformers training data, JSON lines in three forms:

- ``[query, passage]`` or ``[query, passage, negative, ...]``;
- ``{"query": q, "pos": [p, ...], "neg": [n, ...]}``: one pair per positive, negatives kept (and
  ``pos_scores``/``neg_scores``, where given, as teacher scores);
- ``{"set": [a, b, c, ...]}``: duplicate sets (paraphrases), one pair per neighbouring two.
"""

from mining.sources import register
from mining.sources.base import (
    JsonLinesReader, Malformed, SourceReader, optional_score_list, require_text, require_text_list,
)
from schemas.reasons import MISSING_FIELD, WRONG_TYPE


def query_pos_neg_pairs(
    reader: SourceReader, value: dict, lang: str | None, origin: str, task: str | None = None
) -> list[dict]:
    """One pair per positive of a ``{"query", "pos", "neg"}`` record. With ``pos_scores`` and ``neg_scores``
    (a teacher's, one per text, as FlagEmbedding's distillation data has them) each pair's teacher scores
    are its positive's and every negative's: a row is distilled over its whole group or not at all."""
    query = require_text(value, "query")
    positives = require_text_list(value, "pos", 1)
    negatives = require_text_list(value, "neg", 0)
    positive_scores = optional_score_list(value, "pos_scores", len(positives))
    negative_scores = optional_score_list(value, "neg_scores", len(negatives))
    scored = positive_scores is not None and negative_scores is not None
    return [
        reader.pair(
            query, positive, negatives=negatives, query_lang=lang, passage_lang=lang, task=task, origin=origin,
            teacher_scores=[positive_scores[index], *negative_scores] if scored else None,
        )
        for index, positive in enumerate(positives)
    ]


@register
class SbertReader(JsonLinesReader):
    kind = "sbert"
    passage_dedup = False

    def parse(self, value, task, origin):
        if isinstance(value, dict):
            if "set" in value:
                texts = require_text_list(value, "set", 2)
                return [
                    self.pair(first, second, query_lang=task.lang, passage_lang=task.lang, origin=origin)
                    for first, second in zip(texts, texts[1:])
                ]
            return query_pos_neg_pairs(self, value, task.lang, origin)
        if not isinstance(value, list):
            raise Malformed(WRONG_TYPE, f"expected a JSON array or object, got {type(value).__name__}")
        if len(value) < 2:
            raise Malformed(MISSING_FIELD, f"expected [query, passage, negatives...], got {len(value)} item(s)")
        for position, text in enumerate(value):
            if not isinstance(text, str):
                raise Malformed(WRONG_TYPE, f"item {position} is {type(text).__name__}, not a string")
        query, passage, *negatives = value
        return self.pair(
            query, passage, negatives=negatives,
            query_lang=task.lang, passage_lang=task.lang, origin=origin,
        )
