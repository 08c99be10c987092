"""MS MARCO passage ranking: ``collection.tsv`` (pid, passage) + ``queries.*.tsv`` (qid, query)
+ qrels (TREC or ``qid 0 pid 1``), joined as a relevance set; or ``triples.*.tsv``
(query, positive, negative), each line a candidate. MS MARCO document ranking:
``msmarco-docs.tsv`` (docid, url, title, body) + ``msmarco-doctrain-queries.tsv`` +
``msmarco-doctrain-qrels.tsv``, joined the same way, its pairs under the document task.
Files are told apart by name.
"""

import posixpath

from mining.sources import register
from mining.sources.base import Malformed
from mining.sources.relevance import CORPUS, QRELS, QUERIES, RelevanceReader
from schemas.reasons import WRONG_TYPE

TRIPLES = "triples"
DOCUMENTS = "documents"
_DOCUMENT_FILE = "msmarco-docs.tsv"
_DOCUMENT_RANKING_PREFIX = "msmarco-doc"
# E5-mistral's instruction for MS MARCO document ranking; the class's task is the passage ranking one.
DOCUMENT_TASK = "Given a web search query, retrieve relevant documents that answer the query"


@register
class MsMarcoReader(RelevanceReader):
    kind = "msmarco"
    task = "Given a web search query, retrieve relevant passages that answer the query"

    def file_role(self, path):
        name = posixpath.basename(path).lower()
        prefixes = (
            ("collection", CORPUS), ("queries", QUERIES), ("qrels", QRELS), ("triples", TRIPLES),
            (_DOCUMENT_FILE, DOCUMENTS), ("msmarco-doctrain-queries", QUERIES), ("msmarco-doctrain-qrels", QRELS),
        )
        for prefix, role in prefixes:
            if name.startswith(prefix):
                return role
        raise ValueError(
            f"{path}: an MS MARCO file is named collection*, queries*, qrels*, triples*, "
            "msmarco-docs.tsv*, msmarco-doctrain-queries* or msmarco-doctrain-qrels*"
        )

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

    def pair(self, query, passage, *, task=None, **fields):
        """Document ranking's pairs (judged in msmarco-doctrain-qrels) under the document task."""
        judged_in = posixpath.basename(fields["origin"].rsplit(":", 1)[0]).lower()
        document_task = DOCUMENT_TASK if judged_in.startswith(_DOCUMENT_RANKING_PREFIX) else None
        return super().pair(query, passage, task=task or document_task, **fields)

    def parse_line(self, role, line, spec, lang, origin):
        if role == DOCUMENTS:
            fields = line.split("\t")
            if len(fields) != 4:
                raise Malformed(WRONG_TYPE, f"expected docid<TAB>url<TAB>title<TAB>body, got {len(fields)} fields")
            docid, _, title, body = fields
            yield self.document_part(spec, docid.strip(), f"{title}\n{body}" if title.strip() else body, origin)
            return
        if role != TRIPLES:
            yield from super().parse_line(role, line, spec, lang, origin)
            return
        fields = line.split("\t")
        if len(fields) != 3:
            raise Malformed(WRONG_TYPE, f"expected query<TAB>positive<TAB>negative, got {len(fields)} fields")
        query, positive, negative = fields
        yield self.pair(query, positive, negatives=[negative], query_lang=lang, passage_lang=lang, origin=origin)
