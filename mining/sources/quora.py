"""Quora Question Pairs as Quora published them (``quora_duplicate_questions.tsv``): a header
row ``id  qid1  qid2  question1  question2  is_duplicate``, then one labelled pair a line.

Every row is a candidate, (question1, question2); the pairs not labelled duplicates
(``is_duplicate`` 0) are dropped as ``not_duplicate``: they ask different things.
"""

from mining.records import Drop
from mining.sources import register
from mining.sources.base import Malformed, SourceReader, require_text
from schemas.reasons import NOT_DUPLICATE, WRONG_TYPE

_LABELS = {"1": True, "0": False}


@register
class QuoraReader(SourceReader):
    kind = "quora"
    # A question is asked again in other pairs: the same second question twice is no duplicate row.
    passage_dedup = False
    task = "Given a question, retrieve questions that are semantically equivalent to the given question"

    def read(self, task, open_file, limits):
        for path in task.paths:
            yield from self.row_records(path, open_file, limits, lambda row, origin: self._row(row, task.lang, origin))

    def _row(self, row: dict, lang: str | None, origin: str) -> dict | Drop:
        label = require_text(row, "is_duplicate").strip()
        if label not in _LABELS:
            raise Malformed(WRONG_TYPE, f"is_duplicate is {label!r}, not 0 or 1")
        record = self.pair(
            require_text(row, "question1"), require_text(row, "question2"),
            query_lang=lang, passage_lang=lang, origin=origin,
        )
        return record if _LABELS[label] else Drop(record, NOT_DUPLICATE)
