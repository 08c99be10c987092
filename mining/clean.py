"""Text cleaning rules, one pure function each, and the pair-level decisions."""

import html
import re
import unicodedata
from dataclasses import dataclass

import ftfy
import ftfy.bad_codecs  # noqa: F401  registers ftfy's sloppy-windows-* codecs
from ftfy.chardata import CHARMAP_ENCODINGS
from selectolax.lexbor import LexborHTMLParser

from mining.records import Drop, content_id
from schemas import pairs as f
from schemas.reasons import EMPTY_SIDE, IDENTICAL_SIDES, TOO_LONG


# Conservative: full-width CJK punctuation and curly quotes are left alone;
# HTML is handled by strip_html, which knows remnants from prose.
_FTFY_CONFIG = ftfy.TextFixerConfig(
    unescape_html=False,
    fix_character_width=False,
    uncurl_quotes=False,
    explain=False,
    normalization="NFC",
)


def _ftfy_clue_pattern() -> re.Pattern:
    """Characters without which ftfy (as configured) leaves a text unchanged.

    Mojibake is UTF-8 read in a one-byte encoding: a lead byte (0xC2-0xF4)
    then a continuation byte (0x80-0xBF), each shown as that encoding's
    character; ftfy also mends sequences whose 0xA0 byte became a space after
    the lead bytes it lists in ALTERED_UTF8_RE. Its other fixes need C1
    controls, terminal escapes, ligatures, surrogates, U+FFFD or Unicode line
    breaks.
    """
    leads, continuations, leads_before_space = set(), set(), set()
    for encoding in CHARMAP_ENCODINGS:
        leads.update(bytes(range(0xC2, 0xF5)).decode(encoding, "ignore"))
        continuations.update(bytes(range(0x80, 0xC0)).decode(encoding, "ignore"))
        leads_before_space.update(b"\xc2\xc3\xc5\xce\xd0\xd9\xe0\xe1\xe2\xe3\xf0".decode(encoding, "ignore"))

    def char_class(chars: set[str]) -> str:
        return "[" + re.escape("".join(sorted(chars))) + "]"

    return re.compile(
        f"{char_class(leads)}{char_class(continuations)}|{char_class(leads_before_space)} "
        "|[\\x1b\\x80-\\x9f\\ufb00-\\ufb06\\ud800-\\udfff\\ufffd\\u2028\\u2029]"
    )


_FTFY_CLUE = _ftfy_clue_pattern()
_HTML_TAG = re.compile(
    r"<\s*/?\s*(?:a|abbr|b|blockquote|br|code|div|em|font|h[1-6]|hr|i|img|li|ol|p|pre|"
    r"script|small|span|strong|style|sub|sup|table|tbody|td|th|thead|tr|u|ul)\b[^<>]*>|<!--",
    re.IGNORECASE,
)
_BLOCK_TAG = re.compile(r"(<\s*/?\s*(?:blockquote|br|div|h[1-6]|hr|li|ol|p|pre|table|td|th|tr|ul)\b)", re.IGNORECASE)
_HTML_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
# Controls, zero-width and bidi formatting characters. ZWJ/ZWNJ (U+200C/D)
# stay: Persian, Indic scripts and emoji sequences need them.
_INVISIBLE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u00ad\u200b\u200e\u200f\u202a-\u202e"
    "\u2060-\u2064\u2066-\u2069\ufeff]"
)
_WHITESPACE = re.compile(r"\s+")


def repair_encoding(text: str) -> str:
    """Undo mojibake and other encoding damage (ftfy)."""
    if text.isascii() or not _FTFY_CLUE.search(text):
        return text
    return ftfy.fix_text(text, _FTFY_CONFIG)


def html_to_text(markup: str) -> str:
    """The text of an HTML fragment; block boundaries become spaces, scripts and styles go."""
    tree = LexborHTMLParser(_BLOCK_TAG.sub(r" \1", markup))
    for node in tree.css("script, style"):
        node.decompose()
    return tree.body.text(separator="").strip() if tree.body else ""


def strip_html(text: str) -> str:
    """Turn HTML tag and entity remnants into plain text; prose with '<' stays."""
    if _HTML_TAG.search(text):
        return html_to_text(text)
    if "&" in text and _HTML_ENTITY.search(text):
        return html.unescape(text)
    return text


def normalize_unicode(text: str) -> str:
    if text.isascii() or unicodedata.is_normalized("NFC", text):
        return text
    return unicodedata.normalize("NFC", text)


def remove_invisible(text: str) -> str:
    return _INVISIBLE.sub("", text)


def fold_whitespace(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()


def clean_text(text: str) -> str:
    return fold_whitespace(remove_invisible(normalize_unicode(strip_html(repair_encoding(text)))))


@dataclass(frozen=True)
class CleanOptions:
    max_query_chars: int = 2048
    max_passage_chars: int = 8192


def clean_pair(record: dict, options: CleanOptions) -> Drop | None:
    """Clean the texts in place and set the id; a Drop when the pair is unusable."""
    record[f.QUERY] = clean_text(record[f.QUERY])
    record[f.PASSAGE] = clean_text(record[f.PASSAGE])
    negatives = [clean_text(text) for text in record[f.NEGATIVES]]
    record[f.NEGATIVES] = [text for text in negatives if text]
    if record.get(f.TEACHER_SCORES) is not None:
        # A negative that cleans to nothing takes its score with it: the scores stay aligned.
        passage_score, *negative_scores = record[f.TEACHER_SCORES]
        record[f.TEACHER_SCORES] = [passage_score, *(s for s, text in zip(negative_scores, negatives, strict=True) if text)]
    record[f.ID] = content_id(record)
    for side in f.TEXT_FIELDS:
        if not record[side]:
            return Drop(record, EMPTY_SIDE, side)
    if len(record[f.QUERY]) > options.max_query_chars:
        return Drop(record, TOO_LONG, f"query has {len(record[f.QUERY])} chars")
    if len(record[f.PASSAGE]) > options.max_passage_chars:
        return Drop(record, TOO_LONG, f"passage has {len(record[f.PASSAGE])} chars")
    if record[f.QUERY].casefold() == record[f.PASSAGE].casefold():
        return Drop(record, IDENTICAL_SIDES)
    return None


def clean_batch(records: list[dict], options: CleanOptions) -> tuple[list[dict], list[Drop]]:
    kept, drops = [], []
    for record in records:
        drop = clean_pair(record, options)
        if drop is None:
            kept.append(record)
        else:
            drops.append(drop)
    return kept, drops
