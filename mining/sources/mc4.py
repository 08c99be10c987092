"""mC4 / C4 web pages: JSON lines ``{"text", "url", "timestamp"}`` -> (first line as title, rest of the page).

Only pages whose first line reads as a heading make a pair; the others are
dropped as ``no_title``.
"""

import re

from mining.records import Drop
from mining.sources import register
from mining.sources.base import JsonLinesReader, require_object, require_text
from schemas.reasons import NO_TITLE

MAX_TITLE_CHARS = 120
_SENTENCE_END = re.compile(r"[.!?:;,…。！？：；、]\s*$")


def split_title(text: str) -> tuple[str, str] | None:
    """(heading, body) when the page's first line is a heading: short, no sentence ending, with a body after it."""
    first, _, rest = text.strip().partition("\n")
    first, rest = first.strip(), rest.strip()
    if not rest or not first or len(first) > MAX_TITLE_CHARS or _SENTENCE_END.search(first):
        return None
    return first, rest


@register
class Mc4Reader(JsonLinesReader):
    kind = "mc4"

    def parse(self, value, task, origin):
        require_object(value)
        text = require_text(value, "text")
        split = split_title(text)
        record = self.pair(
            *(split or ("", text)), query_lang=task.lang, passage_lang=task.lang, origin=origin
        )
        return record if split else Drop(record, NO_TITLE, "first line is no heading")
