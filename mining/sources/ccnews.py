"""CC-News style articles: JSON lines ``{"title", "text" | "maintext", "language"?, "url"?}`` -> (title, body)."""

from mining.sources import register
from mining.sources.base import JsonLinesReader, declared_language, require_object, require_text


@register
class CcNewsReader(JsonLinesReader):
    kind = "ccnews"

    def parse(self, value, task, origin):
        require_object(value)
        title = require_text(value, "title")
        body = require_text(value, "text", "maintext")
        lang = declared_language(value.get("language"), task.lang)
        return self.pair(title, body, query_lang=lang, passage_lang=lang, origin=origin)
