"""DPR's retriever training sets (``biencoder-nq-train.json``, ``biencoder-trivia-train.json``):
one JSON array of ``{"question", "answers", "positive_ctxs", "negative_ctxs", "hard_negative_ctxs"}``,
each context ``{"title", "text", "passage_id", ...}``.

The files run to gigabytes, so the array is decoded an element at a time. Each positive
context is a candidate, (question, title and text), with the hard negatives (BM25 passages
without the answer) as negatives; ``negative_ctxs`` are random passages, not hard negatives,
and are left out. A question without a positive context is dropped as ``no_positive``.
"""

import posixpath

from mining.formats import titled_passage
from mining.records import Drop
from mining.sources import register
from mining.sources.base import SourceReader, require_list, require_object, require_text
from mining.sources.squad import SquadReader
from schemas.reasons import NO_POSITIVE

# E5-mistral gives TriviaQA SQuAD's instruction; DPR names its files after the set (biencoder-trivia-*).
TRIVIAQA_TASK = SquadReader.task


@register
class DprReader(SourceReader):
    kind = "dpr"
    passage_dedup = False
    task = "Given a question, retrieve Wikipedia passages that answer the question"

    def read(self, task, open_file, limits):
        for path in task.paths:
            instruction = TRIVIAQA_TASK if "trivia" in posixpath.basename(path).lower() else None
            yield from self.array_records(
                path, open_file, limits, lambda value, origin: self._question(value, task.lang, origin, instruction)
            )

    def _question(self, value, lang: str | None, origin: str, instruction: str | None) -> list | Drop:
        question = require_text(require_object(value), "question")
        positives = _contexts(value, "positive_ctxs")
        negatives = _contexts(value, "hard_negative_ctxs") if "hard_negative_ctxs" in value else []
        fields = dict(task=instruction, query_lang=lang, passage_lang=lang, origin=origin)
        if not positives:
            return Drop(self.pair(question, "", **fields), NO_POSITIVE)
        return [self.pair(question, positive, negatives=negatives, **fields) for positive in positives]


def _contexts(value: dict, key: str) -> list[str]:
    return [titled_passage(context, f"{key}[{i}]") for i, context in enumerate(require_list(value, key))]
