"""Extractive QA sets in SQuAD v1.1/v2.0 JSON (also XQuAD, MLQA): (question, context).

A SQuAD file is one JSON document (tens of MB at most), read whole. Every
question is a candidate; SQuAD v2's unanswerable ones are dropped as
``unanswerable``: their context does not answer them.
"""

from mining import formats
from mining.records import Drop
from mining.sources import register
from mining.sources.base import CORRUPT_INPUT_ERRORS, Malformed, SourceReader, describe
from schemas.reasons import UNANSWERABLE, UNREADABLE


@register
class SquadReader(SourceReader):
    kind = "squad"
    passage_dedup = False
    task = "Retrieve Wikipedia passages that answer the question"  # E5-mistral Table 14, for SQuAD and TriviaQA

    def read(self, task, open_file, limits):
        for path in task.paths:
            try:
                with open_file(path) as stream:
                    data = stream.read()
            except CORRUPT_INPUT_ERRORS as error:
                yield self.dead_letter(UNREADABLE, describe(error), path, None, b"")
                continue
            try:
                paragraphs = formats.squad_paragraphs(data)
            except Malformed as error:
                yield self.dead_letter(error.reason, error.detail, path, None, data)
                continue
            yield from self._questions(paragraphs, task, path)

    def _questions(self, paragraphs, task, path: str):
        for paragraph in paragraphs:
            if isinstance(paragraph, formats.MalformedPart):
                yield self.dead_letter(paragraph.error.reason, paragraph.error.detail, path, None, paragraph.value)
                continue
            for question_index, qa in enumerate(paragraph.questions):
                origin = f"{path}:{paragraph.question_where(question_index)}"
                yield from self.record_items(
                    lambda: self._question(qa, paragraph.context, task, origin), path, None, qa
                )

    def _question(self, qa, context: str, task, origin: str) -> dict | Drop:
        question = formats.squad_question(qa, origin)
        record = self.pair(question.text, context, query_lang=task.lang, passage_lang=task.lang, origin=origin)
        return record if question.answerable else Drop(record, UNANSWERABLE)
