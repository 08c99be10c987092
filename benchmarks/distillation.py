"""Does distillation from teacher scores help? Fine-tuning with and without it, side by side, on a tiny model.

    python benchmarks/distillation.py [--seeds 3] [--steps 60] [--teachers 8:1] [--weights 1 0.3] [--model-size 128:2]

The whole flow runs through the real pipelines. XQuAD (the shared data) is split by article: every third
article is held out. The others' de and es versions are mined with ``--pipeline finetune`` as one run;
``--pipeline hardnegatives`` gives every row 7 negatives from the run's own contexts in both languages (ranks
1-7 of ``name_vectors``, a language-blind encoder of names and numbers), as mining over a multilingual corpus
with a multilingual encoder does. XQuAD is parallel, so a German question's best-ranked "negative" is often
the Spanish translation of its own context: a false negative, the kind multilingual mining is full of, which
plain InfoNCE pushes away.
``--pipeline teacher`` scores the rows with a teacher that knows the answer: ``label_teacher`` below, the true
label (is this passage the question's paragraph, in either language?) times a margin plus Gaussian noise,
seeded per pair, for each ``MARGIN:NOISE`` of ``--teachers``; ``MARGIN:NOISE:own`` is the control, a teacher
that knows only the row's own label (the translation irrelevant), so that what the loss does alone and what
knowing the answer adds come apart. The student is taught the teacher's whole
distribution, at the loss's temperature (0.01), so neither number is harmless: a margin of 8 logits asks for a
positive 0.08 of cosine above its negatives, no more (KL pulls a student surer than its teacher back), and noise
of 1 logit asks it to rank each row's irrelevant negatives in a random order to a hundredth of a cosine; a real
teacher's order among them means something. A tiny model pre-trained on the bundled samples is fine-tuned from the
same start with each ``--distill-weight`` of ``--weights`` and with ``0`` (same data, order and seed), and
each is evaluated on the held-out articles: nDCG@10 of de questions over the es contexts and of es questions
over the de contexts (the cross-lingual retrieval the false negatives teach against), of de, es and en each over
its own contexts, and of de and es questions over one pool of both languages' contexts where the paragraph is
relevant in either (LAReQA's language-agnostic setting).
"""

import argparse
import hashlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import zlib
from functools import cache
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mining.sources import get_reader  # noqa: E402

XQUAD = REPO.parent / "shared" / "data" / "xquad"
# MARGIN:NOISE[:own], logits: a relevant passage's lead, the noise's deviation; ":own" a teacher that knows only
# the row's own label (its translation is irrelevant to it), the control that tells what knowing the answer adds.
TEACHER_ENV = "EMBEDMILL_LABEL_TEACHER"
# The rows' own instruction, stored as the checkpoints' query prompt: evaluation asks what fine-tuning taught.
SQUAD_TASK = get_reader("squad").task


def _folded(text: str) -> str:
    return " ".join(text.split())


@cache
def _paragraphs() -> tuple[dict[str, tuple[int, int, str]], dict[str, tuple[int, int, str]]]:
    """Each question's and each context's paragraph, (article, paragraph) in XQuAD's parallel order, and
    language."""
    of_question, of_context = {}, {}
    for language in ("de", "es"):
        for a, article in enumerate(json.loads((XQUAD / f"xquad.{language}.json").read_text("utf-8"))["data"]):
            for p, paragraph in enumerate(article["paragraphs"]):
                of_context[_folded(paragraph["context"])] = (a, p, language)
                for question in paragraph["qas"]:
                    of_question[_folded(question["question"])] = (a, p, language)
    return of_question, of_context


def relevant(query: str, passage: str, *, own_language_only: bool = False) -> bool:
    """Is PASSAGE the query's paragraph, in either language (or in the query's own only)?"""
    of_question, of_context = _paragraphs()
    question, context = of_question.get(_folded(query)), of_context.get(_folded(passage))
    if question is None or context is None:
        return False
    return question == context if own_language_only else question[:2] == context[:2]


def label_teacher(queries: list[str], passages: list[str]) -> np.ndarray:
    """A teacher that knows the answer: label x margin + noise, the noise a pure function of the pair."""
    margin, noise, own_language_only = _teacher(os.environ.get(TEACHER_ENV, "8:1"))
    scores = []
    for query, passage in zip(queries, passages, strict=True):
        label = relevant(query, passage, own_language_only=own_language_only)
        seed = int.from_bytes(hashlib.blake2b(f"{query}\0{passage}".encode(), digest_size=8).digest(), "little")
        scores.append(label * margin + noise * np.random.default_rng(seed).standard_normal())
    return np.array(scores)


NAME_OR_NUMBER = re.compile(r"\w*\d\w*|[^\W\d_][^\W_]*")


def name_vectors(texts: list[str], kind: str) -> np.ndarray:
    """A language-blind encoder for mining the negatives: hashed names and numbers (capitalised words and
    words with digits), normalised. It ranks a context's translation high, as a multilingual encoder does."""
    vectors = np.zeros((len(texts), 4096), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in NAME_OR_NUMBER.findall(text):
            if word[0].isupper() or any(character.isdigit() for character in word):
                vectors[row, zlib.crc32(word.casefold().encode()) % 4096] += 1.0
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)


def _beam(*arguments: str) -> None:
    subprocess.run(
        [sys.executable, "beam_runner.py", *arguments], cwd=REPO, check=True, capture_output=True
    )


def _train(*arguments: str) -> None:
    subprocess.run([sys.executable, "-m", "training", *arguments], cwd=REPO, check=True, capture_output=True)


HELD_OUT_EVERY = 3  # every third XQuAD article is held out of fine-tuning and evaluated on


def _split_xquad(work: Path) -> tuple[int, int]:
    """XQuAD de/es/en split by article into WORK/train.LANG.json and WORK/held-out.LANG.json (parallel files);
    returns how many articles each side has."""
    sizes = {}
    for language in ("de", "es", "en"):
        data = json.loads((XQUAD / f"xquad.{language}.json").read_text("utf-8"))
        for name, keep in (("train", lambda a: a % HELD_OUT_EVERY), ("held-out", lambda a: not a % HELD_OUT_EVERY)):
            articles = [article for a, article in enumerate(data["data"]) if keep(a)]
            (work / f"{name}.{language}.json").write_text(json.dumps({**data, "data": articles}), "utf-8")
            sizes[name] = len(articles)
    return sizes["train"], sizes["held-out"]


def _held_out_ndcg(checkpoint: Path, work: Path) -> dict[str, float]:
    """nDCG@10 on the held-out articles: de and es questions over the other language's contexts, and each
    language over its own."""
    from training import evaluation
    from training.encoder import Encoder

    encoder = evaluation.own_encoder(Encoder.from_pretrained(checkpoint), 64)
    sets = {lang: evaluation.retrieval_set(str(work / f"held-out.{lang}.json")) for lang in ("de", "es", "en")}
    scores = {
        f"{lang}->{lang}": evaluation.evaluate_retrieval(encoder, {lang: data})["mean"]["ndcg@10"]
        for lang, data in sets.items()
    }
    for lang, other in (("de", "es"), ("es", "de")):
        report = evaluation.evaluate_retrieval(encoder, {lang: sets[lang], other: sets[other]}, corpus_language=other)
        scores[f"{lang}->{other}"] = report["per_language"][lang]["ndcg@10"]
    for lang in ("de", "es"):
        pool = _any_language_pool(sets[lang], sets["de"], sets["es"])
        scores[f"{lang}->de+es"] = evaluation.evaluate_retrieval(encoder, {lang: pool})["mean"]["ndcg@10"]
    return scores


def _any_language_pool(questions, *parallel_corpora):
    """LAReQA's setting (Roy et al., 2020, built from XQuAD): one pool of the contexts in every language, each
    question's paragraph relevant in all of them, so a model that ranks its own language first is not rewarded."""
    from training.evaluation import RetrievalSet

    size = len(parallel_corpora[0].corpus)
    assert all(len(corpus.corpus) == size for corpus in parallel_corpora), "XQuAD's contexts are parallel"
    return RetrievalSet(
        questions.queries,
        [text for corpus in parallel_corpora for text in corpus.corpus],
        [{copy * size + doc: grade for copy in range(len(parallel_corpora)) for doc, grade in judged.items()}
         for judged in questions.relevant],
    )


def _cross_lingual(scores: dict[str, float]) -> float:
    return (scores["de->es"] + scores["es->de"]) / 2


def _any_language(scores: dict[str, float]) -> float:
    return (scores["de->de+es"] + scores["es->de+es"]) / 2


def _format(scores: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.4f}" for name, value in scores.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--lr", default="5e-4", help="fine-tuning learning rate")
    parser.add_argument(
        "--teachers", nargs="+", default=["8:1"],
        help="MARGIN:NOISE of each label teacher, in logits; MARGIN:NOISE:own for one that knows only the row's own label",
    )
    parser.add_argument(
        "--weights", type=float, nargs="+", default=[1.0, 0.3], help="the --distill-weight values set against none"
    )
    parser.add_argument(
        "--model-size", default="128:2", metavar="HIDDEN:LAYERS",
        help="the student BERT's width and depth (128:2 is training's --model tiny); same vocabulary whatever the size",
    )
    args = parser.parse_args()
    try:
        model_size = tuple(int(part) for part in args.model_size.split(":"))
        if len(model_size) != 2 or model_size[0] < 32 or model_size[0] % 32 or model_size[1] < 1:
            raise ValueError
    except ValueError:
        parser.error(f"--model-size takes HIDDEN:LAYERS, HIDDEN a multiple of 32, e.g. 256:4, not {args.model_size!r}")
    for teacher in args.teachers:
        try:
            _teacher(teacher)
        except ValueError:
            parser.error(f"--teachers takes MARGIN:NOISE or MARGIN:NOISE:own, e.g. 8:0.1, not {teacher!r}")
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        train_articles, held_out_articles = _split_xquad(work)
        _beam("--pipeline=finetune", *(f"--source=squad:{lang}={work / f'train.{lang}.json'}" for lang in ("de", "es")),
              f"--output={work / 'mined'}")
        _beam(
            "--pipeline=hardnegatives", f"--input={work / 'mined'}", f"--output={work / 'negatives'}",
            "--model=python:benchmarks.distillation:name_vectors", "--rank-window=1:7", "--num-negatives=7",
        )  # fmt: skip
        scored = {}
        for teacher in args.teachers:
            scored[teacher] = work / f"scored-{teacher}"
            os.environ[TEACHER_ENV] = teacher
            _beam("--pipeline=teacher", f"--input={work / 'negatives'}", f"--output={scored[teacher]}",
                  "--model=python:benchmarks.distillation:label_teacher")
        rows, false_negatives = _rows_and_false_negatives(work / "negatives")
        pretrained = work / "pretrained"
        _pretrain(work, pretrained, *model_size)
        print(f"fine-tuning rows: {rows} (XQuAD de + es, {train_articles} articles; {held_out_articles} held out), "
              f"7 mined negatives each from both languages' contexts, {false_negatives} of them the row's own context "
              f"in the other language")
        print(f"pre-trained, held-out nDCG@10: {_format(_held_out_ndcg(pretrained, work))}", flush=True)
        # (teacher, weight); weight 0 ignores the teacher, so one run of it serves every teacher.
        arms = [(args.teachers[0], 0.0), *((teacher, weight) for teacher in args.teachers for weight in args.weights)]
        results: dict[tuple[float, float], list[dict[str, float]]] = {arm: [] for arm in arms}
        for seed in range(args.seeds):
            for teacher, weight in arms:
                output = work / f"finetuned-{seed}-{teacher}-{weight}"
                _train(
                    "finetune", "--data", str(scored[teacher]),
                    "--model", str(pretrained), "--output", str(output),
                    "--negatives", "7", "--batch-size", "32", "--max-steps", str(args.steps), "--lr", args.lr,
                    "--max-query-length", "64", "--max-passage-length", "128", "--num-workers", "0",
                    "--seed", str(seed), "--distill-weight", str(weight), "--save-every", "100000", "--no-progress",
                    "--instruction", SQUAD_TASK,
                )  # fmt: skip
                results[teacher, weight].append(_held_out_ndcg(output, work))
                print(f"seed {seed}, {_arm(teacher, weight)}: {_format(results[teacher, weight][-1])}", flush=True)
        _summarise(results, arms[0], args.seeds)


def _teacher(text: str) -> tuple[float, float, bool]:
    margin, noise, *own = text.split(":")
    if own not in ([], ["own"]):
        raise ValueError(text)
    return float(margin), float(noise), bool(own)


def _arm(teacher: str, weight: float) -> str:
    margin, noise, own_language_only = _teacher(teacher)
    knows = ", the row's own label only" if own_language_only else ""
    return "--distill-weight 0" if not weight else f"--distill-weight {weight}, teacher margin {margin:g} noise {noise:g}{knows}"


def _summarise(results: dict[tuple[str, float], list[dict[str, float]]], baseline_arm, seeds: int) -> None:
    """Mean nDCG@10 of each arm over the seeds, and each distilled arm's gain over no distillation, paired by
    seed (same data, order and start), with the per-seed gains."""
    names = list(results[baseline_arm][0]) + ["cross-lingual", "any-language"]

    def figures(scores: dict[str, float]) -> dict[str, float]:
        return {**scores, "cross-lingual": _cross_lingual(scores), "any-language": _any_language(scores)}

    baseline = [figures(scores) for scores in results[baseline_arm]]
    print(f"\nheld-out nDCG@10, mean over {seeds} seeds (gain over --distill-weight 0, per seed in brackets)")
    print("  " + " | ".join(["arm", *names]))
    for arm, runs in results.items():
        cells = []
        for name in names:
            values = [figures(scores)[name] for scores in runs]
            cell = f"{statistics.mean(values):.4f}"
            if arm != baseline_arm:
                gains = [value - base[name] for value, base in zip(values, baseline, strict=True)]
                cell += f" {statistics.mean(gains):+.4f} [{' '.join(f'{gain:+.3f}' for gain in gains)}]"
            cells.append(cell)
        print("  " + " | ".join([_arm(*arm), *cells]))


def _rows_and_false_negatives(run: Path) -> tuple[int, int]:
    import pyarrow as pa

    manifest = json.loads((run / "manifest.json").read_text())
    rows = [row for shard in manifest["shards"] for row in pa.ipc.open_stream((run / shard["path"]).read_bytes()).read_all().to_pylist()]
    return len(rows), sum(relevant(row["query"], text) for row in rows for text in row["negatives"])


def _pretrain(work: Path, pretrained: Path, hidden_size: int, layers: int) -> None:
    """The student's start: a random BERT of this size with training's --model tiny vocabulary, pre-trained 100 steps
    on the bundled samples."""
    from training.shard_store import shards_by_source
    from training.tiny import build_tiny_encoder

    mined = work / "pretrain-samples"
    _beam(*(f"--source={kind}=mining/samples/{kind}/*" for kind in ("sbert", "nllb", "ccnews")), f"--output={mined}")
    model = "tiny"
    if (hidden_size, layers) != (128, 2):
        model = str(work / "random-start")
        build_tiny_encoder(shards_by_source([str(mined)]), hidden_size=hidden_size, layers=layers).save_pretrained(model)
    _train(
        "pretrain", "--data", str(mined), "--model", model, "--output", str(pretrained), "--batch-size", "32",
        "--max-steps", "100", "--lr", "5e-4", "--max-query-length", "32", "--max-passage-length", "64",
        "--num-workers", "0", "--save-every", "1000", "--no-progress",
    )  # fmt: skip


if __name__ == "__main__":
    main()
