"""BEIR datasets' training splits (HotpotQA, FEVER, NQ, ...) as BEIR publishes them, given as
``beir=DIR/**``: ``corpus.jsonl`` ``{"_id", "title", "text"}``, ``queries.jsonl`` ``{"_id", "text"}``
and ``qrels/train.tsv`` (``query-id  corpus-id  score`` under a header row), joined as a relevance
set: judgments of score 0 are negatives, not positives. ``qrels/dev.tsv`` and ``qrels/test.tsv``
are left unread: the evaluation splits' judgments must not become training pairs.
"""

import posixpath

from mining import formats
from mining.sources import register
from mining.sources.relevance import CORPUS, QRELS, QUERIES, RelevanceReader

_ROLES = {"corpus.jsonl": CORPUS, "queries.jsonl": QUERIES, "train.tsv": QRELS}
_EVALUATION_QRELS = ("dev.tsv", "test.tsv")
_QRELS_HEADER = "query-id"

# E5-mistral's instruction for each BEIR training set, by the dataset's folder name.
TASK_BY_DATASET = {
    "hotpotqa": "Given a multi-hop question, retrieve documents that can help answer the question",
    "fever": "Given a claim, retrieve documents that support or refute the claim",
    "nq": "Given a question, retrieve Wikipedia passages that answer the question",
}


@register
class BeirReader(RelevanceReader):
    kind = "beir"
    task = "Given a query, retrieve relevant documents"

    def plan(self, spec, match):
        tasks = [task for task in super().plan(spec, match) if not _is_evaluation_qrels(task.paths[0])]
        for task in tasks:
            self.file_role(task.paths[0])
        return tasks

    def file_role(self, path):
        name = posixpath.basename(path).lower().removesuffix(".gz")
        if name in _ROLES and (name != "train.tsv" or _in_qrels_folder(path)):
            return _ROLES[name]
        raise ValueError(f"{path}: a BEIR training set is corpus.jsonl, queries.jsonl and qrels/train.tsv")

    def parse_document(self, line):
        return formats.parse_document(line, "_id")

    def parse_query(self, line):
        return formats.parse_beir_query(line)

    def parse_line(self, role, line, spec, lang, origin):
        if role == QRELS and line.split("\t", 1)[0] == _QRELS_HEADER:
            return iter(())  # the header row judges nothing
        # Ids join within their dataset: one --source may hold several, whose ids overlap.
        dataset = _dataset_folder(_path_of(origin))
        return super().parse_line(role, line, f"{spec}|{dataset}", lang, origin)

    def pair(self, query, passage, *, task=None, **fields):
        """A pair with its dataset's instruction, found from the qrels file that judged it."""
        dataset = posixpath.basename(_dataset_folder(_path_of(fields["origin"]))).lower()
        return super().pair(query, passage, task=task or TASK_BY_DATASET.get(dataset), **fields)


def _in_qrels_folder(path: str) -> bool:
    return posixpath.basename(posixpath.dirname(path)).lower() == "qrels"


def _is_evaluation_qrels(path: str) -> bool:
    return _in_qrels_folder(path) and posixpath.basename(path).lower().removesuffix(".gz") in _EVALUATION_QRELS


def _path_of(origin: str) -> str:
    return origin.rsplit(":", 1)[0]


def _dataset_folder(path: str) -> str:
    """The folder holding the corpus, the queries and ``qrels/``: BEIR's archives unpack to one
    folder per dataset (``hotpotqa/``)."""
    folder = posixpath.dirname(path)
    return posixpath.dirname(folder) if _in_qrels_folder(path) else folder
