"""sentence-transformers training data: JSON lines of ``[query, passage]`` or ``[query, passage, negative, ...]``."""

from mining.records import new_pair
from mining.sources import register
from mining.sources.base import MISSING_FIELD, WRONG_TYPE, JsonLinesReader, Malformed


@register
class SbertReader(JsonLinesReader):
    kind = "sbert"
    dedup_passage = False

    def parse(self, value, task, origin):
        if not isinstance(value, list):
            raise Malformed(WRONG_TYPE, f"expected a JSON array, got {type(value).__name__}")
        if len(value) < 2:
            raise Malformed(MISSING_FIELD, f"expected [query, passage, negatives...], got {len(value)} item(s)")
        for position, text in enumerate(value):
            if not isinstance(text, str):
                raise Malformed(WRONG_TYPE, f"item {position} is {type(text).__name__}, not a string")
        query, passage, *negatives = value
        return new_pair(
            self.kind, query, passage, negatives=negatives,
            query_lang=task.lang, passage_lang=task.lang, origin=origin,
        )
