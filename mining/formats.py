"""Parsers of the data formats that both mining and evaluation read: SQuAD JSON, and the
queries, corpus and qrels of relevance-judged sets (MIRACL, BEIR, MS MARCO).

Each raises ``Malformed`` for what does not follow its format; a reader makes dead
letters of that, evaluation and decontamination one line naming the file.
"""

import re
from dataclasses import dataclass
from typing import Iterator

from mining.sources.base import Malformed, decode_json, optional_text, require_list, require_object, require_text
from schemas.reasons import WRONG_TYPE

_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class SquadParagraph:
    """A context and its questions, the raw ``qas`` entries that ``squad_question`` reads."""

    where: str  # data[A].paragraphs[P]
    context: str
    questions: list

    def question_where(self, index: int) -> str:
        return f"{self.where}.qas[{index}]"


@dataclass(frozen=True)
class SquadQuestion:
    text: str
    # SQuAD v2's unanswerable questions: their context does not answer them.
    answerable: bool


@dataclass(frozen=True)
class MalformedPart:
    """An article or paragraph that is not SQuAD, with the reason; the rest of the document still reads."""

    error: Malformed
    value: object


def squad_paragraphs(data: bytes) -> Iterator[SquadParagraph | MalformedPart]:
    """Every paragraph of a SQuAD v1.1/v2.0 document (also XQuAD, MLQA), in document order.

    Raises Malformed at once when the document as a whole is not SQuAD.
    """
    return _paragraphs(require_list(require_object(decode_json(data), "document"), "data", "document"))


def _paragraphs(articles: list) -> Iterator[SquadParagraph | MalformedPart]:
    for article_index, article in enumerate(articles):
        where = f"data[{article_index}]"
        try:
            paragraphs = require_list(require_object(article, where), "paragraphs", where)
        except Malformed as error:
            yield MalformedPart(error, article)
            continue
        for paragraph_index, paragraph in enumerate(paragraphs):
            where = f"data[{article_index}].paragraphs[{paragraph_index}]"
            try:
                context = require_text(require_object(paragraph, where), "context", where=where)
                yield SquadParagraph(where, context, require_list(paragraph, "qas", where))
            except Malformed as error:
                yield MalformedPart(error, paragraph)


def squad_question(qa, where: str) -> SquadQuestion:
    """One entry of a paragraph's ``qas``; ``where`` names it in what Malformed says."""
    question = require_text(require_object(qa, where), "question", where=where)
    return SquadQuestion(question, qa.get("is_impossible") is not True)


def whole_squad(data: bytes) -> Iterator[tuple[str, list[SquadQuestion]]]:
    """Every context with its questions, for a reader that takes a benchmark whole or not at all:
    Malformed at the first part that is not SQuAD."""
    for paragraph in squad_paragraphs(data):
        if isinstance(paragraph, MalformedPart):
            raise paragraph.error
        questions = paragraph.questions
        yield paragraph.context, [squad_question(qa, paragraph.question_where(i)) for i, qa in enumerate(questions)]


def parse_query(line: str) -> tuple[str, str]:
    """``qid<TAB>query``."""
    qid, tab, text = line.partition("\t")
    if not tab:
        raise Malformed(WRONG_TYPE, "expected qid<TAB>query")
    return qid.strip(), text


def parse_beir_query(line: str) -> tuple[str, str]:
    """A BEIR ``queries.jsonl`` line ``{"_id", "text", "metadata"?}``: (qid, query)."""
    value = require_object(decode_json(line))
    return require_text(value, "_id"), require_text(value, "text")


def parse_document(line: str, *id_keys: str) -> tuple[str, str]:
    """A corpus JSON line ``{ID, "title"?, "text"}``, the id under the first of ``id_keys``
    present: (id, title and text)."""
    value = require_object(decode_json(line))
    return require_text(value, *id_keys), titled_passage(value)


def titled_passage(value, where: str = "") -> str:
    """A passage object ``{"title"?, "text"}`` (a corpus line, a DPR context) as one text: title, then text."""
    title = optional_text(require_object(value, where), "title")
    text = require_text(value, "text", where=where)
    return f"{title}\n{text}" if title else text


def parse_qrel(line: str) -> tuple[str, str, int]:
    """TREC ``qid Q0 docid relevance``, or ``qid docid [relevance]``; tabs or spaces."""
    fields = _WHITESPACE.split(line.strip())
    if len(fields) == 4:
        qid, _, docid, relevance = fields
    elif len(fields) in (2, 3):
        qid, docid, relevance = (*fields, "1")[:3]
    else:
        raise Malformed(WRONG_TYPE, f"a qrels line has 2 to 4 fields, not {len(fields)}")
    try:
        return qid, docid, int(relevance)
    except ValueError:
        raise Malformed(WRONG_TYPE, f"relevance {relevance!r} is no integer") from None
