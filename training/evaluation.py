"""Evaluation as the mE5 report measures it: bitext mining (Tatoeba) and retrieval (XQuAD, MLQA, MIRACL, BEIR);
and, during training, in-batch retrieval on held-out mined pairs.

Every benchmark score comes from exact cosine search over normalised embeddings,
done in blocks of the corpus so no full query-by-corpus matrix is ever held.
Ties go to the lower corpus index, so results never depend on the hardware.
"""

import contextlib
import importlib
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import fsspec
import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from mining import formats
from mining import search as exact_search
from mining.sources.base import Malformed
from schemas import pairs as f
from schemas.encoder_spec import EncoderSpec
from training.prompts import Kind, Prompts
from training.shard_store import ShardsBySource, ShardStore, Source

if TYPE_CHECKING:  # imported where an encoder is loaded: a callable's evaluation needs no transformers
    from training.encoder import Encoder

SEARCH_BLOCK = 16384
RETRIEVAL_DEPTH = 100


class TextEncoder(Protocol):
    def encode(self, texts: list[str], kind: Kind) -> np.ndarray: ...


class EvaluationDataError(ValueError):
    """Evaluation data that cannot be scored, said in one line naming the file."""


# --- encoders -------------------------------------------------------------------------------


@dataclass
class _OwnEncoder:
    encoder: "object"
    batch_size: int

    def encode(self, texts: list[str], kind: Kind) -> np.ndarray:
        return self.encoder.encode(texts, kind, batch_size=self.batch_size).numpy()


@dataclass
class _SentenceTransformer:
    model: "object"
    batch_size: int

    def encode(self, texts: list[str], kind: Kind) -> np.ndarray:
        prompt_name = kind if kind in self.model.prompts else None
        return self.model.encode(
            texts, prompt_name=prompt_name, batch_size=self.batch_size,
            normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False,
        )


@dataclass
class _Callable:
    function: Callable[[list[str], str], "np.ndarray"]

    def encode(self, texts: list[str], kind: Kind) -> np.ndarray:
        return self.function(texts, kind)


class EncoderOutputError(ValueError):
    """An encoder returned something other than one finite row per text, all of one width."""


@dataclass
class _Checked:
    """An encoder whose every output is checked before use: NaN rows would rank as nothing and
    keep every pair, a wrong row count would pair texts with other texts' embeddings."""

    spec: str
    encoder: TextEncoder
    normalize: bool  # a callable's rows may have any length
    width: int | None = None

    def encode(self, texts: list[str], kind: Kind) -> np.ndarray:
        embeddings = self._checked(self.encoder.encode(texts, kind), texts, kind)
        if self.normalize:
            return embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
        return embeddings

    def _checked(self, output, texts: list[str], kind: Kind) -> np.ndarray:
        try:
            embeddings = np.asarray(output, dtype=np.float32)
        except (TypeError, ValueError) as error:
            raise EncoderOutputError(
                f"encoder {self.spec} returned no array of numbers for {kind} texts: {error}"
            ) from None
        if embeddings.ndim != 2 or len(embeddings) != len(texts):
            problem = f"shape {embeddings.shape} for {len(texts)} {kind} texts"
        elif self.width is not None and embeddings.shape[1] != self.width:
            problem = f"{embeddings.shape[1]} dimensions for {kind} texts after {self.width} before"
        elif not np.isfinite(embeddings).all():
            bad = int(np.count_nonzero(~np.isfinite(embeddings).all(axis=1)))
            problem = f"NaN or infinite values for {bad} of {len(texts)} {kind} texts"
        else:
            self.width = embeddings.shape[1]
            return embeddings
        raise EncoderOutputError(f"encoder {self.spec} returned {problem}")


def own_encoder(encoder, batch_size: int = 64) -> TextEncoder:
    """Our training.encoder.Encoder as evaluation's TextEncoder."""
    return _OwnEncoder(encoder, batch_size)


def load_encoder(text: str, device: str | None = None, batch_size: int = 64) -> TextEncoder:
    """The encoder an ``EncoderSpec`` names (see ``schemas.encoder_spec``)."""
    spec = EncoderSpec.parse(text)
    if spec.module is not None:
        encode = getattr(importlib.import_module(spec.module), spec.callable_name)
        return _Checked(text, _Callable(encode), normalize=True)
    directory = Path(spec.path)
    saved_by_sentence_transformers = (directory / "modules.json").exists() and not (directory / "config.json").exists()
    if spec.sentence_transformers or saved_by_sentence_transformers:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(spec.path, device=device)
        return _Checked(text, _SentenceTransformer(model, batch_size), normalize=False)
    from training.encoder import Encoder

    encoder = Encoder.from_pretrained(spec.path)
    encoder.to(torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu")))
    return _Checked(text, _OwnEncoder(encoder, batch_size), normalize=False)


# --- search and metrics -----------------------------------------------------------------------


def search(queries: np.ndarray, corpus: np.ndarray, k: int, block: int = SEARCH_BLOCK) -> np.ndarray:
    """Indices of each query's ``k`` most similar corpus rows, best first; ties to the lower index.

    The corpus is scanned in blocks, keeping a running top k, so memory is
    queries x (block + k) whatever the corpus size; the result does not depend on the block.
    """
    k = min(k, len(corpus))
    if not len(queries):
        return np.zeros((0, k), dtype=np.int64)
    best_scores = np.zeros((len(queries), 0))
    best_indices = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, len(corpus), block):
        part = corpus[start : start + block]
        found = exact_search.best_candidates(queries, part, np.arange(start, start + len(part)), k)
        best_scores = np.concatenate([best_scores, np.stack([scores for _, scores in found])], axis=1)
        best_indices = np.concatenate([best_indices, np.stack([indices for indices, _ in found]) + start], axis=1)
        order = np.lexsort((best_indices, -best_scores), axis=1)[:, :k]
        best_scores = np.take_along_axis(best_scores, order, axis=1)
        best_indices = np.take_along_axis(best_indices, order, axis=1)
    return best_indices


def bitext_scores(retrieved: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    """Accuracy, and precision, recall and F1 as MTEB's BitextMining task computes them:
    scikit-learn's support-weighted averages with the retrieved indices as ``y_true``
    and the gold ones as ``y_pred``, zero where undefined."""
    y_true, y_pred = np.asarray(retrieved), np.asarray(gold)
    classes, true_counts = np.unique(y_true, return_counts=True)
    predicted_counts = np.array([(y_pred == c).sum() for c in classes])
    hits = np.array([((y_true == c) & (y_pred == c)).sum() for c in classes])
    precision = np.divide(hits, predicted_counts, out=np.zeros(len(classes)), where=predicted_counts > 0)
    recall = hits / true_counts
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros(len(classes)), where=denominator > 0)
    weights = true_counts / true_counts.sum()
    return {
        "accuracy": float((y_true == y_pred).mean()),
        "precision": float(weights @ precision),
        "recall": float(weights @ recall),
        "f1": float(weights @ f1),
    }


def retrieval_scores(ranked: np.ndarray, relevant: Sequence[dict[int, int]]) -> dict[str, float]:
    """nDCG@10 (graded gains, as trec_eval), MRR@10 and Recall@1/10/100, averaged over queries."""
    totals = dict.fromkeys(("ndcg@10", "mrr@10", "recall@1", "recall@10", "recall@100"), 0.0)
    for row, judged in zip(ranked, relevant, strict=True):
        positives = {doc for doc, grade in judged.items() if grade > 0}
        gains = [judged.get(int(doc), 0) for doc in row[:10]]
        ideal = sorted((grade for grade in judged.values() if grade > 0), reverse=True)[:10]
        dcg = sum(gain / math.log2(rank + 2) for rank, gain in enumerate(gains))
        ideal_dcg = sum(gain / math.log2(rank + 2) for rank, gain in enumerate(ideal))
        totals["ndcg@10"] += dcg / ideal_dcg if ideal_dcg else 0.0
        first = next((rank for rank, doc in enumerate(row[:10]) if int(doc) in positives), None)
        totals["mrr@10"] += 1 / (first + 1) if first is not None else 0.0
        for depth in (1, 10, 100):
            found = len(positives.intersection(int(doc) for doc in row[:depth]))
            totals[f"recall@{depth}"] += found / len(positives) if positives else 0.0
    return {metric: value / len(relevant) for metric, value in totals.items()}


# --- data -----------------------------------------------------------------------------------


def _read_text(path: str) -> str:
    with fsspec.open(path, "rt", encoding="utf-8") as stream:
        return stream.read()


def _lines(path: str) -> list[str]:
    return _read_text(path).splitlines()


def tatoeba_pairs(directory: str, languages: Sequence[str] | None = None) -> dict[str, tuple[list[str], list[str]]]:
    """LASER layout: ``tatoeba.xxx-eng.xxx`` and ``tatoeba.xxx-eng.eng``, line i of one translating line i of the other."""
    filesystem, root = fsspec.core.url_to_fs(directory)
    found = sorted(
        match[1] for name in filesystem.ls(root, detail=False)
        if (match := re.search(r"tatoeba\.([a-z]{3})-eng\.\1$", name))
    )
    chosen = list(languages) if languages else found
    pairs = {}
    for lang in chosen:
        if lang not in found:
            raise EvaluationDataError(f"{directory}: no tatoeba.{lang}-eng.{lang} (have {', '.join(found) or 'none'})")
        source = _lines(f"{directory}/tatoeba.{lang}-eng.{lang}")
        english = _lines(f"{directory}/tatoeba.{lang}-eng.eng")
        if not source:
            raise EvaluationDataError(f"{directory}/tatoeba.{lang}-eng.{lang} is empty")
        if len(source) != len(english):
            raise EvaluationDataError(
                f"{directory}/tatoeba.{lang}-eng: {len(source)} {lang} lines but {len(english)} English ones"
            )
        pairs[lang] = (source, english)
    return pairs


@dataclass
class RetrievalSet:
    queries: list[str]
    corpus: list[str]
    relevant: list[dict[int, int]]  # per query: corpus index -> relevance grade


def squad_set(path: str) -> RetrievalSet:
    """SQuAD-format JSON (XQuAD, MLQA): questions as queries, the unique contexts as the corpus."""
    with fsspec.open(path, "rb") as stream:
        data = stream.read()
    corpus, position, queries, relevant = [], {}, [], []
    try:
        for context, questions in formats.whole_squad(data):
            if context not in position:
                position[context] = len(corpus)
                corpus.append(context)
            for question in questions:
                if question.answerable:
                    queries.append(question.text)
                    relevant.append({position[context]: 1})
    except Malformed as error:
        raise EvaluationDataError(f"{path} is not SQuAD JSON: {error.detail}") from None
    if not queries:
        raise EvaluationDataError(f"{path} holds no answerable question")
    return RetrievalSet(queries, corpus, relevant)


def _parsed_lines(path: str, parse: Callable[[str], tuple]) -> Iterator[tuple]:
    """``parse`` of every line that is not blank; EvaluationDataError naming the first it refuses."""
    for number, line in enumerate(_lines(path), 1):
        if line.strip():
            try:
                yield parse(line)
            except Malformed as error:
                raise EvaluationDataError(f"{path}:{number}: {error.detail}") from None


def beir_set(directory: str) -> RetrievalSet:
    """MIRACL/BEIR layout: queries (``topics*.tsv`` or ``queries*.jsonl``), ``corpus*.jsonl`` and qrels (TREC or BEIR TSV)."""
    filesystem, root = fsspec.core.url_to_fs(directory)
    names = sorted(filesystem.ls(root, detail=False))

    def named(*prefixes: str) -> list[str]:
        return [name for name in names if Path(name).name.startswith(prefixes)]

    query_text = {}
    for name in named("topics", "queries"):
        parse = formats.parse_beir_query if name.endswith(".jsonl") else formats.parse_query
        query_text.update(_parsed_lines(name, parse))
    corpus, position = [], {}
    for name in named("corpus"):
        for docid, text in _parsed_lines(name, lambda line: formats.parse_document(line, "docid", "_id")):
            position[docid] = len(corpus)
            corpus.append(text)
    judged: dict[str, dict[int, int]] = {}
    for name in named("qrels"):
        for line in _lines(name):
            try:
                qid, docid, grade = formats.parse_qrel(line)
            except Malformed:
                continue  # BEIR's header row, a blank line
            if docid in position:
                judged.setdefault(qid, {})[position[docid]] = grade
    qids = sorted(qid for qid, grades in judged.items() if qid in query_text and any(g > 0 for g in grades.values()))
    if not qids or not corpus:
        raise EvaluationDataError(f"{directory}: needs queries, a corpus and qrels with relevant documents")
    return RetrievalSet([query_text[qid] for qid in qids], corpus, [judged[qid] for qid in qids])


# --- tasks ------------------------------------------------------------------------------------


@dataclass
class _Counted:
    """An encoder whose texts are counted on a progress bar as each call returns: the calls are those of an
    evaluation without one, so its scores do not depend on whether progress is shown."""

    encoder: TextEncoder
    bar: tqdm

    def encode(self, texts: list[str], kind: Kind) -> np.ndarray:
        embeddings = self.encoder.encode(texts, kind)
        self.bar.update(len(texts))
        self.bar.refresh()  # one call is a whole corpus: shown now, not when tqdm's interval next allows
        return embeddings


@contextlib.contextmanager
def _progress(encoder: TextEncoder, task: str, texts: int, shown: bool) -> Iterator[_Counted]:
    """``encoder``, counting the ``texts`` it encodes on stderr, if ``shown`` and stderr is a terminal."""
    with tqdm(total=texts, desc=f"{task}: texts encoded", unit="text", disable=None if shown else True,
              leave=False, dynamic_ncols=True) as bar:
        yield _Counted(encoder, bar)


def evaluate_tatoeba(
    encoder: TextEncoder, directory: str, languages: Sequence[str] | None = None, progress: bool = False
) -> dict:
    """For each language, every sentence's nearest English neighbour by cosine, scored against the gold line.
    ``progress``: the sentences encoded so far on a terminal's stderr."""
    per_language = {}
    pairs = tatoeba_pairs(directory, languages)
    with _progress(encoder, "tatoeba", sum(len(a) + len(b) for a, b in pairs.values()), progress) as counted:
        for lang, (source, english) in pairs.items():
            retrieved = search(counted.encode(source, "query"), counted.encode(english, "query"), k=1)[:, 0]
            per_language[lang] = bitext_scores(retrieved, np.arange(len(source)))
    return _report("tatoeba", per_language)


def evaluate_retrieval(
    encoder: TextEncoder, sets: dict[str, RetrievalSet], corpus_language: str | None = None, pooled: bool = False,
    progress: bool = False,
) -> dict:
    """Each language's queries against its own corpus, another language's (``corpus_language``),
    or all corpora pooled. ``progress``: the queries and passages encoded so far on a terminal's stderr."""
    texts = sum(len(data.corpus) + len(data.queries) for data in sets.values())
    with _progress(encoder, "retrieval", texts, progress) as counted:
        return _retrieval(counted, sets, corpus_language, pooled)


def _retrieval(encoder: TextEncoder, sets: dict[str, RetrievalSet], corpus_language: str | None, pooled: bool) -> dict:
    per_language = {}
    corpora = {lang: encoder.encode(data.corpus, "passage") for lang, data in sets.items()}
    offsets, start = {}, 0
    for lang, data in sets.items():
        offsets[lang] = start
        start += len(data.corpus)
    for lang, data in sets.items():
        queries = encoder.encode(data.queries, "query")
        if pooled:
            corpus, relevant = np.concatenate(list(corpora.values())), [
                {offsets[lang] + doc: grade for doc, grade in judged.items()} for judged in data.relevant
            ]
        else:
            target = corpus_language or lang
            if len(sets[target].corpus) != len(data.corpus):
                raise EvaluationDataError(f"the {lang} and {target} corpora are not parallel")
            corpus, relevant = corpora[target], data.relevant
        per_language[lang] = retrieval_scores(search(queries, corpus, RETRIEVAL_DEPTH), relevant)
    return _report("retrieval", per_language)


def _report(task: str, per_language: dict[str, dict[str, float]]) -> dict:
    metrics = next(iter(per_language.values())).keys()
    mean = {metric: float(np.mean([scores[metric] for scores in per_language.values()])) for metric in metrics}
    return {"task": task, "per_language": per_language, "mean": mean}


def evaluate_spec(spec: str, encoder, batch_size: int = 64, progress: bool = False) -> dict[str, float]:
    """Mean scores of ``TASK=PATH`` (``tatoeba=DIR`` or ``retrieval=SQUAD.json|BEIR_DIR``) for our encoder,
    as training logs them."""
    task, _, path = spec.partition("=")
    text_encoder = own_encoder(encoder, batch_size)
    if task == "tatoeba":
        return evaluate_tatoeba(text_encoder, path, progress=progress)["mean"]
    if task == "retrieval":
        return evaluate_retrieval(text_encoder, {"data": retrieval_set(path)}, progress=progress)["mean"]
    raise ValueError(f"evaluation task must be tatoeba=DIR or retrieval=PATH, not {spec!r}")


def language_of(path: str) -> str:
    """The language a file names (``xquad.de.json``), else the file or folder name."""
    name = Path(path.rstrip("/")).name
    match = re.search(r"[._-]([a-z]{2,3})\.json$", name)
    return match[1] if match else name


def retrieval_set(path: str) -> RetrievalSet:
    """SQuAD JSON for a file, the MIRACL/BEIR layout for a directory."""
    return squad_set(path) if path.endswith(".json") else beir_set(path)


def format_report(report: dict) -> str:
    metrics = list(report["mean"])
    header = ["language", *metrics]
    rows = [[lang, *(f"{scores[m]:.4f}" for m in metrics)] for lang, scores in sorted(report["per_language"].items())]
    rows.append(["mean", *(f"{report['mean'][m]:.4f}" for m in metrics)])
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row))
        for row in [header, *rows]
    )


# --- in-batch retrieval on held-out pairs, as training logs it ------------------------------


def held_out_rows(shards: ShardsBySource, store: ShardStore, max_pairs_per_source: int) -> dict[str, dict]:
    """The first pairs of each source in storage order (shuffled already: sorted by content hash)."""
    rows = {}
    for name, source_shards in shards.items():
        queries, passages = [], []
        for batch in Source(name, source_shards).record_batches(store):
            batch = batch.slice(0, max_pairs_per_source - len(queries))
            queries += batch.column(f.QUERY).to_pylist()
            passages += batch.column(f.PASSAGE).to_pylist()
            if len(queries) >= max_pairs_per_source:
                break
        rows[name] = {"query": queries, "passage": passages}
    return rows


def in_batch_retrieval(
    encoder: "Encoder",
    rows: dict[str, dict],
    *,
    batch_size: int = 64,
    temperature: float = 0.01,
    prompts: dict[str, Prompts] | None = None,
) -> dict[str, float]:
    """Top-1 accuracy and InfoNCE loss of queries against the passages of their batch.

    Batches are cut from one source at a time, as in training; ``chance`` is the
    accuracy of a random ranking.
    """
    prompts = prompts or {}
    loss = correct = batches = pairs = 0
    per_source = {}
    for source, texts in rows.items():
        source_prompts = prompts.get(source, encoder.prompts)
        queries = encoder.encode(texts["query"], "query", prompts=source_prompts)
        passages = encoder.encode(texts["passage"], "passage", prompts=source_prompts)
        source_correct = source_pairs = 0
        for start in range(0, len(queries), batch_size):
            scores = queries[start : start + batch_size] @ passages[start : start + batch_size].T
            if len(scores) < 2:
                continue
            labels = torch.arange(len(scores))
            loss += F.cross_entropy(scores / temperature, labels, reduction="sum").item()
            source_correct += int((scores.argmax(dim=1) == labels).sum())
            source_pairs += len(scores)
            batches += 1
        if source_pairs:
            per_source[f"eval_accuracy/{source}"] = source_correct / source_pairs
        correct += source_correct
        pairs += source_pairs
    if not pairs:
        raise ValueError("no held-out batch of two or more pairs")
    # A random ranking finds the passage with probability 1/len(batch): summed over a batch's pairs, 1.
    return {
        "eval_loss": loss / pairs,
        "eval_accuracy": correct / pairs,
        "eval_chance": batches / pairs,
        "eval_pairs": pairs,
        **per_source,
    }
