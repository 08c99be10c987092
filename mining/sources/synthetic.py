"""LLM-generated instruction data: JSON lines, one generation each ->
(query, positive, hard negative where the template has one) with its instruction.

``{"task_type": "short-long" | "long-short" | "short-short" | "long-long" | "sts" | "bitext",
"instruction": "...", "language": "German" | "de" | ["Uzbek", "English"] (bitext: S1's, then S2's and S3's),
"response": "<the LLM's raw text>"}``, or an already-parsed ``"example": {...}`` instead of
``response``. Each template's records get their own source (``synthetic-short-long``, ...), so
the manifest counts them per template and language. See ``mining.instruct`` for the rules.
"""

import functools

import pycountry

from mining import instruct, languages
from mining.clean import fold_whitespace
from mining.records import Drop, new_pair
from mining.sources import register
from mining.sources.base import (
    JsonLinesReader, Malformed, declared_language, optional_text, require_object, require_text,
)
from schemas import reasons
from schemas import pairs as f
from schemas.reasons import MISSING_FIELD, WRONG_TYPE

# English names that ISO 639 spells otherwise ("Modern Greek (1453-)", "Panjabi", ...).
_NAME_ALIASES = {
    "greek": "el", "farsi": "fa", "punjabi": "pa", "nepali": "ne", "malay": "ms", "mandarin": "zh",
    "cantonese": "yue", "swahili": "sw", "pashto": "ps", "filipino": "tl", "tagalog": "tl",
}


@functools.cache
def language_code(value: str) -> str:
    """A language code or English language name ("German", "Simplified Chinese") in the
    convention of ``mining.languages``; ValueError when it is neither."""
    text = value.strip()
    try:
        return languages.normalize(text)
    except ValueError:
        pass
    name = text.removeprefix("Simplified ").removeprefix("Traditional ")
    if name.casefold() in _NAME_ALIASES:
        return languages.normalize(_NAME_ALIASES[name.casefold()])
    try:
        language = pycountry.languages.lookup(name)
    except LookupError:
        raise ValueError(f"not a language code or name: {value!r}") from None
    return languages.normalize(getattr(language, "alpha_2", None) or language.alpha_3)


@register
class SyntheticReader(JsonLinesReader):
    kind = "synthetic"
    # The sources its records carry: one per template.
    sources = instruct.SOURCES

    def _languages(self, value, template, fallback: str | None) -> tuple[str | None, str | None]:
        declared = value.get("language", fallback)
        if template.bilingual:
            if not (isinstance(declared, list) and len(declared) == 2):
                raise Malformed(WRONG_TYPE if declared is not None else MISSING_FIELD,
                                "bitext needs 'language': [S1's language, the language of S2 and S3]")
        else:
            declared = [declared, declared]
        query_lang, passage_lang = (declared_language(item, None, language_code) for item in declared)
        return query_lang, passage_lang

    def parse(self, value, task, origin):
        require_object(value)
        task_type = require_text(value, "task_type")
        template = instruct.TEMPLATES.get(task_type)
        if template is None:
            raise Malformed(reasons.UNKNOWN_TASK_TYPE, f"{task_type!r}; known: {', '.join(instruct.TEMPLATES)}")
        instruction = fold_whitespace(optional_text(value, "instruction"))
        if value.get("example") is not None:
            example = require_object(value["example"], "'example'")
        elif "response" in value:
            example = instruct.parse_response(value["response"])
        else:
            raise Malformed(MISSING_FIELD, "'response' or 'example' missing")
        texts = instruct.example_texts(example, template)
        query_lang, passage_lang = self._languages(value, template, task.lang)
        negative = texts[template.negative] if template.negative else None
        record = new_pair(
            instruct.source_name(task_type),
            texts[template.query],
            texts[template.positive],
            negatives=[negative] if negative else [],
            query_lang=query_lang,
            passage_lang=passage_lang,
            bilingual=template.bilingual,
            task=instruction,
            origin=origin,
        )
        record[f.TASK_TYPE] = task_type
        record[f.INSTRUCTION] = instruction
        failed = instruct.check_example(instruction, texts, template)
        if failed:
            return Drop(record, *failed)
        return record
