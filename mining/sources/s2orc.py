"""Scientific papers (S2ORC, Semantic Scholar): JSON lines ``{"title", "abstract" | "paperAbstract"}`` -> (title, abstract).

A paper without an abstract is a candidate with an empty side, dropped by cleaning.
"""

from mining.sources import register
from mining.sources.base import WRONG_TYPE, JsonLinesReader, Malformed, optional_text


@register
class S2orcReader(JsonLinesReader):
    kind = "s2orc"

    def parse(self, value, task, origin):
        if not isinstance(value, dict):
            raise Malformed(WRONG_TYPE, f"expected a JSON object, got {type(value).__name__}")
        title = optional_text(value, "title")
        abstract = optional_text(value, "abstract", "paperAbstract")
        return self.pair(title, abstract, query_lang=task.lang, passage_lang=task.lang, origin=origin)
