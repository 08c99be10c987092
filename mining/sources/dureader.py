"""DuReader-retrieval's dual-encoder training file as Baidu publishes it (``train/dual.train.tsv``):
``query  null  para_text_pos  null  para_text_neg  0``, tab-separated, the ``null`` columns empty.

A query comes on several lines, each with one of its BM25 negatives and a positive, so the
lines of one query join through a shuffle: each distinct positive is a candidate, (query,
passage), with the query's distinct negatives. Only ``dual.train.tsv`` is read under a folder
(``dual.train.demo.tsv`` repeats part of it; ``cross.train.tsv`` and ``dev/`` are other tasks).
The set is Chinese: rows declare ``zh`` unless the ``--source`` names a language.
"""

import posixpath

from mining.sources import register
from mining.sources.base import JoiningReader, JoinPart, Malformed
from schemas.reasons import WRONG_TYPE

_FIELDS = 6
_TRAINING_FILE = "dual.train.tsv"
_LINE = "line"


@register
class DuReaderReader(JoiningReader):
    kind = "dureader"
    passage_dedup = False
    task = "Given a Chinese search query, retrieve web passages that answer the question"

    def plan(self, spec, match):
        tasks = [task for task in super().plan(spec, match) if _is_training_file(task.paths[0])]
        if not tasks:
            raise FileNotFoundError(f"--source {spec}: no {_TRAINING_FILE}")
        return tasks

    def read(self, task, open_file, limits):
        lang = task.lang or "zh"
        for path in task.paths:
            yield from self.line_records(
                path, open_file, limits, lambda text, origin: self._line(text, task.spec, lang, origin)
            )

    def _line(self, text: str, spec: str, lang: str, origin: str) -> JoinPart:
        fields = text.split("\t")
        if len(fields) != _FIELDS:
            raise Malformed(WRONG_TYPE, f"expected {_FIELDS} tab-separated fields, got {len(fields)}")
        query, _, positive, _, negative, _ = fields
        value = {"query": query, "positive": positive, "negative": negative, "lang": lang, "origin": origin}
        return JoinPart(f"{spec}|{query}", _LINE, value)

    def join(self, round_index, key, parts):
        lines = sorted((part.value for part in parts), key=lambda value: value["origin"])
        first_by_positive = {}
        for value in lines:
            first_by_positive.setdefault(value["positive"], value)
        negatives = list(dict.fromkeys(
            value["negative"] for value in lines if value["negative"] not in first_by_positive
        ))
        for positive, value in first_by_positive.items():
            yield self.pair(
                value["query"], positive, negatives=negatives,
                query_lang=value["lang"], passage_lang=value["lang"], origin=value["origin"],
            )


def _is_training_file(path: str) -> bool:
    return posixpath.basename(path).lower().startswith(_TRAINING_FILE)
