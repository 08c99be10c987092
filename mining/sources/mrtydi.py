"""Mr. TyDi's training split as published on the Hugging Face hub (``castorini/mr-tydi``):
``mrtydi-v1.1-<language>/train.jsonl.gz``, JSON lines ``{"query_id", "query", "positive_passages",
"negative_passages"}``, each passage ``{"docid", "title", "text"}``.

Each positive passage is a candidate, (query, title and text), with the query's negative
passages (BM25's top passages that are not positive) as negatives; a query without a positive
is dropped as ``no_positive``. The language comes from the ``--source`` or else the folder
(``mrtydi-v1.1-japanese``, or a language code). Only ``train*`` files are read: ``dev`` and
``test`` are the evaluation splits.
"""

import dataclasses
import posixpath

from mining.formats import titled_passage
from mining.records import Drop
from mining.sources import register
from mining.sources.base import JsonLinesReader, language_from_path, require_list, require_object, require_text
from schemas.reasons import NO_POSITIVE

# Mr. TyDi's eleven languages as its folders name them.
LANGUAGE_BY_NAME = {
    "arabic": "ar", "bengali": "bn", "english": "en", "finnish": "fi", "indonesian": "id", "japanese": "ja",
    "korean": "ko", "russian": "ru", "swahili": "sw", "telugu": "te", "thai": "th",
}


@register
class MrTydiReader(JsonLinesReader):
    kind = "mrtydi"
    passage_dedup = False
    task = "Given a question, retrieve Wikipedia passages that answer the question"

    def plan(self, spec, match):
        tasks = [task for task in super().plan(spec, match) if _is_train(task.paths[0])]
        if not tasks:
            raise FileNotFoundError(f"--source {spec}: no train* file; Mr. TyDi's dev and test splits are not read")
        return [dataclasses.replace(task, lang=task.lang or _folder_language(task.paths[0])) for task in tasks]

    def parse(self, value, task, origin):
        query = require_text(require_object(value), "query")
        positives = _passages(value, "positive_passages")
        negatives = _passages(value, "negative_passages") if "negative_passages" in value else []
        fields = dict(query_lang=task.lang, passage_lang=task.lang, origin=origin)
        if not positives:
            return Drop(self.pair(query, "", **fields), NO_POSITIVE)
        return [self.pair(query, positive, negatives=negatives, **fields) for positive in positives]


def _passages(value: dict, key: str) -> list[str]:
    return [titled_passage(passage, f"{key}[{i}]") for i, passage in enumerate(require_list(value, key))]


def _is_train(path: str) -> bool:
    return posixpath.basename(path).lower().startswith("train")


def _folder_language(path: str) -> str | None:
    folder = posixpath.basename(posixpath.dirname(path)).lower()
    return LANGUAGE_BY_NAME.get(folder.rsplit("-", 1)[-1]) or language_from_path(path)
