"""StackExchange archive dumps, ``Posts.xml``: (question title + body, best answer).

Streamed row by row (lxml iterparse, each row freed once read), so a dump of
any size needs the memory of one row. Questions (``PostTypeId="1"``) are the
candidates; their answers (``PostTypeId="2"``, ``ParentId``) join them through
a shuffle. The accepted answer wins, else the highest-scored answer with a
positive score (the older post on a tie). Bodies are HTML, turned into text.
Other post types (tag wikis, nominations) are no pair candidates. The language
is ``:LANG`` or the site folder's (``ru.stackoverflow.com/Posts.xml``).
"""

from lxml import etree

from mining.clean import html_to_text
from mining.records import Drop
from mining.sources import register
from mining.sources.base import CORRUPT_INPUT_ERRORS, JoiningReader, JoinPart, Malformed, language_from_path
from schemas.reasons import MISSING_FIELD, NO_ANSWER, NO_GOOD_ANSWER, UNREADABLE, WRONG_TYPE


_QUESTION, _ANSWER = "1", "2"


def _integer(attributes: dict, name: str, default: int | None = None) -> int:
    value = attributes.get(name)
    if value is None:
        if default is None:
            raise Malformed(MISSING_FIELD, f"{name} missing")
        return default
    try:
        return int(value)
    except ValueError:
        raise Malformed(WRONG_TYPE, f"{name}={value!r} is no integer") from None


def best_answer(answers: list[dict], accepted_id: int | None) -> dict | None:
    accepted = [answer for answer in answers if answer["id"] == accepted_id]
    if accepted:
        return accepted[0]
    scored = [answer for answer in answers if answer["score"] > 0]
    return max(scored, key=lambda answer: (answer["score"], -answer["id"]), default=None)


@register
class StackExchangeReader(JoiningReader):
    kind = "stackexchange"
    task = "Given a question, retrieve an answer to it"

    def read(self, task, open_file, limits):
        for path in task.paths:
            lang = task.lang or language_from_path(path)
            row_number = 0
            try:
                with open_file(path) as stream:
                    rows = etree.iterparse(
                        stream, events=("end",), tag="row", resolve_entities=False, no_network=True
                    )
                    for _, row in rows:
                        row_number += 1
                        attributes = dict(row.attrib)
                        row.clear()
                        while row.getprevious() is not None:
                            del row.getparent()[0]
                        origin = f"{path}:{row_number}"
                        yield from self.record_items(
                            lambda: self._part(attributes, path, lang, origin) or [], path, row_number, attributes
                        )
            except (*CORRUPT_INPUT_ERRORS, etree.XMLSyntaxError) as error:
                detail = f"{type(error).__name__} after row {row_number}: {error}"
                yield self.dead_letter(UNREADABLE, detail, path, None, b"")

    def _part(self, attributes: dict, path: str, lang: str | None, origin: str) -> JoinPart | None:
        """Post ids are per site, and a site is one Posts.xml: keys carry the path."""
        post_id = _integer(attributes, "Id")
        post_type = attributes.get("PostTypeId")
        if post_type is None:
            raise Malformed(MISSING_FIELD, "PostTypeId missing")
        body = html_to_text(attributes.get("Body", ""))
        if post_type == _QUESTION:
            text = f"{attributes.get('Title', '')}\n{body}"
            accepted = _integer(attributes, "AcceptedAnswerId", default=-1)
            value = {"text": text, "accepted": accepted, "lang": lang, "origin": origin}
            return JoinPart(f"{path}#{post_id}", _QUESTION, value)
        if post_type == _ANSWER:
            value = {"id": post_id, "score": _integer(attributes, "Score", default=0), "text": body}
            return JoinPart(f"{path}#{_integer(attributes, 'ParentId')}", _ANSWER, value)
        return None

    def join(self, round_index, key, parts):
        parts = list(parts)
        questions = [part.value for part in parts if part.role == _QUESTION]
        if not questions:
            return  # answers to a question outside the input: context without a candidate
        question = min(questions, key=lambda value: value["origin"])
        answers = [part.value for part in parts if part.role == _ANSWER]
        answer = best_answer(answers, question["accepted"])
        record = self.pair(
            question["text"], answer["text"] if answer else "",
            query_lang=question["lang"], passage_lang=question["lang"], origin=question["origin"],
        )
        if answer is None:
            yield Drop(record, NO_GOOD_ANSWER if answers else NO_ANSWER)
        else:
            yield record
