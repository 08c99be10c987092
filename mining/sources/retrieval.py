"""Labelled retrieval sets in the FlagEmbedding/BGE format: JSON lines ``{"query", "pos": [...], "neg": [...],
"prompt"?, "pos_scores"?, "neg_scores"?}``; the prompt becomes the row's task, the scores (a teacher's, as
FlagEmbedding's distillation data publishes them) its ``teacher_scores``.
"""

from mining.sources import register
from mining.sources.base import JsonLinesReader, optional_text, require_object
from mining.sources.sbert import query_pos_neg_pairs


@register
class RetrievalReader(JsonLinesReader):
    kind = "retrieval"
    passage_dedup = False
    task = "Given a query, retrieve relevant passages"

    def parse(self, value, task, origin):
        require_object(value)
        instruction = optional_text(value, "prompt").strip() or None
        return query_pos_neg_pairs(self, value, task.lang, origin, task=instruction)
