"""Scientific papers (S2ORC, Semantic Scholar): JSON lines ``{"title", "abstract" | "paperAbstract"}`` -> (title, abstract).

A paper without an abstract is a candidate with an empty side, dropped by cleaning.
"""

from mining.sources import register
from mining.sources.base import JsonLinesReader, optional_text, require_object


@register
class S2orcReader(JsonLinesReader):
    kind = "s2orc"

    def parse(self, value, task, origin):
        require_object(value)
        title = optional_text(value, "title")
        abstract = optional_text(value, "abstract", "paperAbstract")
        return self.pair(title, abstract, query_lang=task.lang, passage_lang=task.lang, origin=origin)
