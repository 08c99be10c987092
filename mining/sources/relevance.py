"""Relevance-judged retrieval sets: queries, a corpus and qrels, joined in two shuffle rounds.

Round 0 groups each corpus document with the judgments naming it; round 1
groups each query with its judged documents. Every positive judgment
(relevance > 0) is a candidate: (query, document), with the query's judged
non-relevant documents as negatives. Files join within one ``--source``.
Not a source kind itself: ``msmarco`` and ``miracl`` build on it.
"""

from typing import Iterator

from mining.formats import parse_qrel, parse_query
from mining.records import Drop
from mining.sources.base import JoiningReader, JoinPart, language_from_path
from schemas.reasons import DOC_MISSING, QUERY_MISSING


QUERIES, CORPUS, QRELS = "queries", "corpus", "qrels"
_DOC, _JUDGMENT, _QUERY, _JUDGED = "doc", "judgment", "query", "judged"


class RelevanceReader(JoiningReader):
    join_rounds = 2
    passage_dedup = False

    def file_role(self, path: str) -> str:
        """QUERIES, CORPUS or QRELS (or a role the subclass reads itself)."""
        raise NotImplementedError

    def parse_document(self, line: str) -> tuple[str, str]:
        """(docid, text) of a corpus line."""
        raise NotImplementedError

    def parse_query(self, line: str) -> tuple[str, str]:
        """(qid, query) of a queries line: ``qid<TAB>query`` unless the layout says otherwise."""
        return parse_query(line)

    def read(self, task, open_file, limits):
        for path in task.paths:
            yield from self.read_lines(task, path, open_file, limits)

    def read_lines(self, task, path, open_file, limits) -> Iterator:
        role = self.file_role(path)
        lang = task.lang or language_from_path(path)
        yield from self.line_records(
            path, open_file, limits, lambda text, origin: self.parse_line(role, text, task.spec, lang, origin)
        )

    def parse_line(self, role: str, line: str, spec: str, lang: str | None, origin: str) -> Iterator:
        if role == CORPUS:
            yield self.document_part(spec, *self.parse_document(line), origin)
        elif role == QRELS:
            qid, docid, relevance = parse_qrel(line)
            value = {"qid": qid, "docid": docid, "relevance": relevance, "lang": lang, "origin": origin}
            yield JoinPart(f"{spec}|{docid}", _JUDGMENT, value)
        elif role == QUERIES:
            qid, text = self.parse_query(line)
            yield JoinPart(f"{spec}|{qid}", _QUERY, {"text": text, "origin": origin}, round=1)
        else:
            raise ValueError(f"{self.kind} has no file role {role!r}")

    def document_part(self, spec: str, docid: str, text: str, origin: str) -> JoinPart:
        """What a corpus line joins its judgments with."""
        return JoinPart(f"{spec}|{docid}", _DOC, {"text": text, "origin": origin})

    def join(self, round_index, key, parts):
        parts = list(parts)
        return (self._join_documents if round_index == 0 else self._join_queries)(key, parts)

    def _join_documents(self, key, parts):
        spec = key.rsplit("|", 1)[0]
        document = _first(part.value for part in parts if part.role == _DOC)
        for part in parts:
            if part.role != _JUDGMENT:
                continue
            judgment = part.value
            if document is not None:
                judged = {**judgment, "text": document["text"]}
                yield JoinPart(f"{spec}|{judgment['qid']}", _JUDGED, judged, round=1)
            elif judgment["relevance"] > 0:
                record = self.pair("", "", query_lang=judgment["lang"], passage_lang=judgment["lang"],
                                   origin=judgment["origin"])
                yield Drop(record, DOC_MISSING, judgment["docid"])

    def _join_queries(self, key, parts):
        query = _first(part.value for part in parts if part.role == _QUERY)
        judged = sorted((part.value for part in parts if part.role == _JUDGED), key=lambda value: value["docid"])
        negatives = [value["text"] for value in judged if value["relevance"] <= 0]
        for value in judged:
            if value["relevance"] <= 0:
                continue
            record = self.pair(
                query["text"] if query else "", value["text"], negatives=negatives,
                query_lang=value["lang"], passage_lang=value["lang"], origin=value["origin"],
            )
            yield record if query else Drop(record, QUERY_MISSING, key.rsplit("|", 1)[1])


def _first(values) -> dict | None:
    """The copy with the smallest origin, so a duplicated line never makes the result depend on shuffle order."""
    return min(values, key=lambda value: value["origin"], default=None)
