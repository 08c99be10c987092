"""xP3 (bigscience): JSON lines ``{"inputs", "targets"}`` -> (prompt, response).

The language is ``:LANG`` or the folder the release puts each language in
(``xP3/fr/...``). It is declared for the response only: xP3's prompts are
often English templates around text in the target language.
"""

from mining.sources import register
from mining.sources.base import JsonLinesReader, language_from_path, require_object, require_text


@register
class Xp3Reader(JsonLinesReader):
    kind = "xp3"
    bilingual = True
    # One target ("Yes", "Positive") answers many prompts.
    passage_dedup = False

    def parse(self, value, task, origin):
        require_object(value)
        path = origin.rsplit(":", 1)[0]
        return self.pair(
            require_text(value, "inputs"), require_text(value, "targets"),
            passage_lang=task.lang or language_from_path(path), bilingual=True, origin=origin,
        )
