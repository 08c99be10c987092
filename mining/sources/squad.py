"""Extractive QA sets in SQuAD v1.1/v2.0 JSON (also XQuAD, MLQA): (question, context).

A SQuAD file is one JSON document (tens of MB at most), read whole. Every
question is a candidate; SQuAD v2's unanswerable ones are dropped as
``unanswerable``: their context does not answer them.
"""

import orjson

from mining.records import Drop
from mining.sources import register
from mining.sources.base import (
    CORRUPT_INPUT_ERRORS, INVALID_JSON, MISSING_FIELD, UNREADABLE, WRONG_TYPE, Malformed, SourceReader,
)

UNANSWERABLE = "unanswerable"


def _object(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise Malformed(WRONG_TYPE, f"{where} is {type(value).__name__}, not an object")
    return value


def _list(value: dict, key: str, where: str) -> list:
    items = value.get(key)
    if not isinstance(items, list):
        raise Malformed(MISSING_FIELD if items is None else WRONG_TYPE, f"{where}: {key!r} must be a list")
    return items


def _text(value: dict, key: str, where: str) -> str:
    text = value.get(key)
    if not isinstance(text, str):
        raise Malformed(MISSING_FIELD if text is None else WRONG_TYPE, f"{where}: {key!r} must be a string")
    return text


@register
class SquadReader(SourceReader):
    kind = "squad"
    dedup_passage = False
    task = "Given a question, retrieve Wikipedia passages that answer the question"

    def read(self, task, open_file, limits):
        for path in task.paths:
            try:
                with open_file(path) as stream:
                    data = stream.read()
            except CORRUPT_INPUT_ERRORS as error:
                yield self.dead_letter(UNREADABLE, f"{type(error).__name__}: {error}", path, None, b"")
                continue
            try:
                articles = _list(_object(orjson.loads(data), "document"), "data", "document")
            except orjson.JSONDecodeError as error:
                yield self.dead_letter(INVALID_JSON, str(error), path, None, data)
                continue
            except Malformed as error:
                yield self.dead_letter(error.reason, error.detail, path, None, data)
                continue
            yield from self._questions(articles, task, path)

    def _questions(self, articles: list, task, path: str):
        for article_index, article in enumerate(articles):
            where = f"data[{article_index}]"
            try:
                paragraphs = _list(_object(article, where), "paragraphs", where)
            except Malformed as error:
                yield self.dead_letter(error.reason, error.detail, path, None, article)
                continue
            for paragraph_index, paragraph in enumerate(paragraphs):
                where = f"data[{article_index}].paragraphs[{paragraph_index}]"
                try:
                    context = _text(_object(paragraph, where), "context", where)
                    questions = _list(paragraph, "qas", where)
                except Malformed as error:
                    yield self.dead_letter(error.reason, error.detail, path, None, paragraph)
                    continue
                for question_index, qa in enumerate(questions):
                    origin = f"{path}:{where}.qas[{question_index}]"
                    yield from self.record_items(lambda: self._question(qa, context, task, origin), path, None, qa)

    def _question(self, qa, context: str, task, origin: str) -> dict | Drop:
        question = _text(_object(qa, origin), "question", origin)
        record = self.pair(question, context, query_lang=task.lang, passage_lang=task.lang, origin=origin)
        return Drop(record, UNANSWERABLE) if qa.get("is_impossible") is True else record
