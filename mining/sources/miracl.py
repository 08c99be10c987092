"""MIRACL / Mr. TyDi layout: topics TSV (qid, query), qrels TREC, corpus JSON lines
``{"docid", "title", "text"}`` (the passage is title and text), joined as a relevance set.
Files are told apart by name: ``topics*``/``queries*``, ``qrels*``, anything else is corpus.
"""

import posixpath

from mining import formats
from mining.sources import register
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
        return formats.parse_document(line, "docid")
