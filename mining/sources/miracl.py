"""MIRACL / Mr. TyDi layout: topics TSV (qid, query), qrels TREC, corpus JSON lines
``{"docid", "title", "text"}`` (the passage is title and text), joined as a relevance set.
Files are told apart by name: ``topics*``/``queries*``, ``qrels*``, anything else is corpus.
"""

import posixpath

from mining.sources import register
from mining.sources.base import decode_json, optional_text, require_object, require_text
from mining.sources.relevance import CORPUS, QRELS, QUERIES, RelevanceReader


@register
class MiraclReader(RelevanceReader):
    kind = "miracl"
    task = "Given a question, retrieve Wikipedia passages that answer the question"

    def file_role(self, path):
        name = posixpath.basename(path).lower()
        if name.startswith(("topics", "queries")):
            return QUERIES
        if name.startswith("qrels"):
            return QRELS
        return CORPUS

    def parse_document(self, line):
        value = require_object(decode_json(line))
        title = optional_text(value, "title")
        text = require_text(value, "text")
        return require_text(value, "docid"), f"{title}\n{text}" if title else text
