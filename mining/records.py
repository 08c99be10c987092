"""Building pair records, dead letters and drop decisions."""

import hashlib
import re
import reprlib
import struct
from dataclasses import dataclass

from schemas import pairs as f
from schemas import removed as r

PAYLOAD_CHARS = 1000
_SURROGATE = re.compile("[\ud800-\udfff]")
# A payload nested deeper than str() can recurse (JSON parsers allow 1024 levels), shown to this depth.
_SHALLOW = reprlib.Repr()
_SHALLOW.maxlevel = 32
_SHALLOW.maxstring = _SHALLOW.maxother = _SHALLOW.maxlong = PAYLOAD_CHARS
_SHALLOW.maxlist = _SHALLOW.maxtuple = _SHALLOW.maxdict = _SHALLOW.maxset = PAYLOAD_CHARS


def new_pair(
    source: str,
    query: str,
    passage: str,
    *,
    negatives: list[str] | None = None,
    query_lang: str | None = None,
    passage_lang: str | None = None,
    bilingual: bool = False,
    task: str | None = None,
    teacher_scores: list[float] | None = None,
    origin: str = "",
) -> dict:
    """A pair as readers emit it, before cleaning and language ID.

    ``query_lang``/``passage_lang`` are the declared languages, if any.
    ``bilingual`` marks translation pairs, whose sides keep their own language.
    ``task`` is the instruction a fine-tuning pair teaches; ``teacher_scores`` a teacher's scores of
    [passage, *negatives], as a labelled set may publish them.
    """
    return {
        f.QUERY: query,
        f.PASSAGE: passage,
        f.NEGATIVES: list(negatives or ()),
        f.SOURCE: source,
        f.DECLARED_QUERY_LANG: query_lang,
        f.DECLARED_PASSAGE_LANG: passage_lang,
        f.BILINGUAL: bilingual,
        f.TASK: task,
        f.TEACHER_SCORES: teacher_scores,
        f.ORIGIN: origin,
    }


def content_id(record: dict) -> str:
    """Stable id: a hash of everything a shard row derives from, the (cleaned) texts,
    the source, the declared languages and any teacher scores, so records with equal ids are interchangeable.
    """
    digest = hashlib.blake2b(digest_size=16)
    declared = (record[f.DECLARED_QUERY_LANG] or "", record[f.DECLARED_PASSAGE_LANG] or "")
    for text in (record[f.SOURCE], *declared, record[f.QUERY], record[f.PASSAGE], *record[f.NEGATIVES]):
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(b"\x1f")
    if record.get(f.TEACHER_SCORES) is not None:
        digest.update(struct.pack(f"<{len(record[f.TEACHER_SCORES])}d", *record[f.TEACHER_SCORES]))
    return digest.hexdigest()


@dataclass(frozen=True)
class DeadLetter:
    """An input record that could not be parsed into a pair."""

    reason: str
    detail: str
    source: str
    file: str
    line: int | None
    payload: str

    @classmethod
    def of(cls, reason: str, detail: str, source: str, file: str, line: int | None, payload) -> "DeadLetter":
        if isinstance(payload, (bytes, bytearray)):
            payload = bytes(payload[: PAYLOAD_CHARS * 4]).decode("utf-8", "replace")
        text = _writable(_shown(payload)[:PAYLOAD_CHARS])
        return cls(reason, _writable(detail), source, _writable(file), line, text)

    def to_dict(self) -> dict:
        """The dead letter as its file's row."""
        return {
            r.REASON: self.reason, r.DETAIL: self.detail, f.SOURCE: self.source,
            r.FILE: self.file, r.LINE: self.line, r.PAYLOAD: self.payload,
        }


def _shown(payload) -> str:
    try:
        return str(payload)
    except RecursionError:
        return _SHALLOW.repr(payload)


def has_surrogates(text: str) -> bool:
    """Whether ``text`` holds UTF-16 surrogates, which are no characters: no UTF-8 encoder takes them."""
    return not text.isascii() and _SURROGATE.search(text) is not None


def _writable(text: str) -> str:
    """``text`` with surrogates (which no UTF-8 file can hold) paired into their character, lone ones
    as U+FFFD: a dead letter must reach its file."""
    if not has_surrogates(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


@dataclass(frozen=True)
class Drop:
    """A pair removed by a stage, with the named reason."""

    record: dict
    reason: str
    detail: str = ""
