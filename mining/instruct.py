"""LLM-generated instruction data ("Improving Text Embeddings with Large Language Models", 2024).

One generation is the LLM's raw response to one of the paper's prompt templates. This module
turns it into a pair record: find and repair the JSON object in the response (``json-repair``),
check it against its template, and format the query with its instruction at write time.

Structure (no JSON object, a truncated one, missing keys, values that are not strings) is a
dead letter (``Malformed``); content that breaks a rule of the template is a named drop.
"""

import hashlib
import math
import re
from dataclasses import dataclass

import json_repair

from mining.clean import fold_whitespace
from mining.records import has_surrogates
from mining.sources.base import Malformed
from schemas import pairs as f
from schemas.instructions import format_instructed_query
from schemas.reasons import (
    EMPTY_FIELD, EMPTY_INSTRUCTION, INSTRUCTION_COPIES_QUERY, INVALID_JSON, MISSING_FIELD, NEGATIVE_EQUALS_POSITIVE,
    TOO_LONG_FOR_TEMPLATE, TOO_SHORT_FOR_TEMPLATE, TRUNCATED_JSON, UNFILLED_PLACEHOLDER, WRONG_TYPE,
)


# Length bounds in characters (after folding whitespace), wide enough for every published example
# of the paper (its Table 16) and for dense CJK text, narrow enough to catch a response that
# ignored its prompt's length rule.
# A short-long query: "less than 5 words", "5 to 15 words" or "at least 10 words"; a short-short
# input or document: "a sentence or a phrase".
SHORT = (2, 400)
# A retrieval document: "at least {num_words} words" (50-500); a long-long input or document:
# "at least 300 words", though the paper's own long-long example has about 90 (so 40 characters,
# which still admits a dense CJK paragraph).
LONG = (40, 8192)
# A classification input_text: "{num_words} words", from "less than 10" up to "at least 200".
INPUT_TEXT = (2, 8192)
# A classification label or misleading label: a class name, never a sentence of prose.
LABEL = (1, 100)
# An STS or bitext text: the prompt's "{unit}", a sentence, a phrase or a passage.
UNIT = (2, 2000)


@dataclass(frozen=True)
class Template:
    """A task type of the paper: the JSON keys its prompt asks for, as (query, positive, negative),
    and the length bounds of the query and of the other texts."""

    query: str
    positive: str
    negative: str | None
    query_bounds: tuple[int, int]
    document_bounds: tuple[int, int]
    bilingual: bool = False

    @property
    def keys(self) -> tuple[str, ...]:
        """The output keys in the order the prompt lists them."""
        return tuple(key for key in (self.query, self.positive, self.negative) if key)


# The paper's prompt templates (Wang et al., 2024, Tables 8-13). Short-short and long-long ask for
# no negative (the paper: the matching is hard enough, and API latency); STS's S3 and bitext's S3
# (a fluent translation with errors) are scored lower against S1, so each is the hard negative.
TEMPLATES = {
    "short-long": Template("user_query", "positive_document", "hard_negative_document", SHORT, LONG),
    "long-short": Template("input_text", "label", "misleading_label", INPUT_TEXT, LABEL),
    "short-short": Template("input", "positive_document", None, SHORT, SHORT),
    "long-long": Template("input", "positive_document", None, LONG, LONG),
    "sts": Template("S1", "S2", "S3", UNIT, UNIT),
    "bitext": Template("S1", "S2", "S3", UNIT, UNIT, bilingual=True),
}

# Template slots the LLM left unfilled: {query}, {{text}}, <document>, [passage], [label], [insert ...].
_SLOT_WORDS = (
    r"(?:text|query|document|passage|sentence|input|answer|question|label|task|placeholder|language|insert[^\]>}]*)"
)
_PLACEHOLDER = re.compile(
    r"\{\{?\s*[A-Za-z_][A-Za-z0-9_ ]*\s*\}\}?|<\s*" + _SLOT_WORDS + r"\s*>|\[\s*" + _SLOT_WORDS + r"\s*\]",
    re.IGNORECASE,
)


def source_name(task_type: str) -> str:
    """The manifest's source for a template: its totals are per template (and per language)."""
    return f"synthetic-{task_type}"


SOURCES = tuple(source_name(task_type) for task_type in TEMPLATES)


MAX_JSON_NESTING = 32  # an example is a flat object of strings; far deeper is never one


def _json_object_text(response: str) -> str:
    """The JSON object in an LLM response: from its first '{' to the matching '}', skipping
    code fences and prose around it; Malformed when there is none or it never closes."""
    start = response.find("{")
    if start < 0:
        raise Malformed(INVALID_JSON, "no JSON object in the response")
    depth, nesting, quote, escaped = 0, 0, None, False
    for index in range(start, len(response)):
        char = response[index]
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char in "{[":
            depth += char == "{"
            nesting += 1
            if nesting > MAX_JSON_NESTING:
                # Refused here, not left to the parser's recursion limit, which differs by stack depth and build.
                raise Malformed(INVALID_JSON, f"the JSON nests deeper than {MAX_JSON_NESTING} levels")
        elif char in "}]":
            nesting = max(nesting - 1, 0)
            if char == "}":
                depth -= 1
                if depth == 0:
                    return response[start : index + 1]
    raise Malformed(TRUNCATED_JSON, f"the JSON object opened at character {start} never closes")


def parse_response(response) -> dict:
    """The example an LLM response holds, repaired (fences, prose, trailing commas, single quotes)."""
    if isinstance(response, dict):
        return response
    if not isinstance(response, str):
        raise Malformed(WRONG_TYPE, f"response is {type(response).__name__}, not a string")
    try:
        value = json_repair.loads(_json_object_text(response))
    except ValueError as error:
        raise Malformed(INVALID_JSON, f"the response's JSON cannot be repaired: {type(error).__name__}") from None
    if not isinstance(value, dict) or not value:
        raise Malformed(INVALID_JSON, "the response's JSON could not be repaired into an object")
    return value


def example_texts(example: dict, template: Template) -> dict[str, str]:
    """The template's keys, present and strings (else Malformed), whitespace folded."""
    texts = {}
    for key in template.keys:
        if key not in example or example[key] is None:
            raise Malformed(MISSING_FIELD, f"{key!r} missing")
        value = example[key]
        if isinstance(value, int) and not isinstance(value, bool) or isinstance(value, float) and math.isfinite(value):
            value = str(value)
        if not isinstance(value, str):
            raise Malformed(WRONG_TYPE, f"{key!r} is {type(value).__name__}, not a string")
        if has_surrogates(value):
            # A lone surrogate escape ("\ud800") that json-repair let through; strict JSON refuses it too.
            raise Malformed(INVALID_JSON, f"{key!r} holds a lone surrogate escape")
        texts[key] = fold_whitespace(value)
    return texts


def check_example(instruction: str, texts: dict[str, str], template: Template) -> tuple[str, str] | None:
    """The first content rule the example breaks, as (reason, detail); None when it passes."""
    if not instruction:
        return EMPTY_INSTRUCTION, ""
    for key, text in texts.items():
        if not text:
            return EMPTY_FIELD, key
    for key, text in (("instruction", instruction), *texts.items()):
        if match := _PLACEHOLDER.search(text):
            return UNFILLED_PLACEHOLDER, f"{key}: {match.group(0)}"
    for key, text in texts.items():
        low, high = template.query_bounds if key == template.query else template.document_bounds
        if len(text) < low:
            return TOO_SHORT_FOR_TEMPLATE, f"{key} has {len(text)} chars, under {low}"
        if len(text) > high:
            return TOO_LONG_FOR_TEMPLATE, f"{key} has {len(text)} chars, over {high}"
    if template.negative and texts[template.negative].casefold() == texts[template.positive].casefold():
        return NEGATIVE_EQUALS_POSITIVE, template.negative
    if instruction.casefold().rstrip(".?!") == texts[template.query].casefold().rstrip(".?!"):
        return INSTRUCTION_COPIES_QUERY, ""
    return None


def with_instruction_id(record: dict) -> dict:
    """Make the (content) id depend on the template and instruction too: the same example under
    two instructions is still one pair for dedup (its key is the raw texts), but which of the two
    is kept is decided by id, not by arrival order."""
    digest = hashlib.blake2b(digest_size=16)
    for text in (record[f.ID], record[f.TASK_TYPE], record[f.INSTRUCTION]):
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(b"\x1f")
    record[f.ID] = digest.hexdigest()
    return record


def with_instruction_ids(batch: list[dict]) -> list[dict]:
    return [with_instruction_id(record) for record in batch]


def format_row(record: dict) -> dict:
    """At write time: ``query`` becomes the formatted one; ``instruction`` keeps the raw instruction."""
    return {**record, f.QUERY: format_instructed_query(record[f.INSTRUCTION], record[f.QUERY])}
