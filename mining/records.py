"""Building pair records, dead letters and drop decisions."""

import hashlib
from dataclasses import asdict, dataclass

from schemas import pairs as f

PAYLOAD_CHARS = 1000


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
    origin: str = "",
) -> dict:
    """A pair as readers emit it, before cleaning and language ID.

    ``query_lang``/``passage_lang`` are the declared languages, if any.
    ``bilingual`` marks translation pairs, whose sides keep their own language.
    ``task`` is the instruction a fine-tuning pair teaches.
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
        f.ORIGIN: origin,
    }


def content_id(record: dict) -> str:
    """Stable id: a hash of everything a shard row derives from, the (cleaned) texts,
    the source and the declared languages, so records with equal ids are interchangeable.
    """
    digest = hashlib.blake2b(digest_size=16)
    declared = (record[f.DECLARED_QUERY_LANG] or "", record[f.DECLARED_PASSAGE_LANG] or "")
    for text in (record[f.SOURCE], *declared, record[f.QUERY], record[f.PASSAGE], *record[f.NEGATIVES]):
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(b"\x1f")
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
        return cls(reason, detail, source, file, line, str(payload)[:PAYLOAD_CHARS])

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Drop:
    """A pair removed by a stage, with the named reason."""

    record: dict
    reason: str
    detail: str = ""
