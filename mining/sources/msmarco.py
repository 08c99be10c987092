"""MS MARCO passage ranking: ``collection.tsv`` (pid, passage) + ``queries.*.tsv`` (qid, query)
+ qrels (TREC or ``qid 0 pid 1``), joined as a relevance set; or ``triples.*.tsv``
(query, positive, negative), each line a candidate. Files are told apart by name.
"""

import posixpath

from mining.sources import register
from mining.sources.base import Malformed
from mining.sources.relevance import CORPUS, QRELS, QUERIES, RelevanceReader
from schemas.reasons import WRONG_TYPE

TRIPLES = "triples"


@register
class MsMarcoReader(RelevanceReader):
    kind = "msmarco"
    task = "Given a web search query, retrieve relevant passages that answer the query"

    def file_role(self, path):
        name = posixpath.basename(path).lower()
        for prefix, role in (("collection", CORPUS), ("queries", QUERIES), ("qrels", QRELS), ("triples", TRIPLES)):
            if name.startswith(prefix):
                return role
        raise ValueError(f"{path}: an MS MARCO file is named collection*, queries*, qrels* or triples*")

    def plan(self, spec, match):
        tasks = super().plan(spec, match)
        for task in tasks:
            self.file_role(task.paths[0])
        return tasks

    def parse_document(self, line):
        pid, tab, passage = line.partition("\t")
        if not tab:
            raise Malformed(WRONG_TYPE, "expected pid<TAB>passage")
        return pid.strip(), passage

    def parse_line(self, role, line, spec, lang, origin):
        if role != TRIPLES:
            yield from super().parse_line(role, line, spec, lang, origin)
            return
        fields = line.split("\t")
        if len(fields) != 3:
            raise Malformed(WRONG_TYPE, f"expected query<TAB>positive<TAB>negative, got {len(fields)} fields")
        query, positive, negative = fields
        yield self.pair(query, positive, negatives=[negative], query_lang=lang, passage_lang=lang, origin=origin)
