"""Does distillation from teacher scores help? Fine-tuning with and without it, side by side, on a tiny model.

    python benchmarks/distillation.py [--seeds 2] [--steps 60] [--noise 1.0] [--weights 1 5]

The whole flow runs through the real pipelines. XQuAD (the shared data) is split by article: every third
article is held out. The others' de and es versions are mined with ``--pipeline finetune`` as one run;
``--pipeline hardnegatives`` gives every row 7 negatives from the run's own contexts in both languages (ranks
1-7 of ``name_vectors``, a language-blind encoder of names and numbers), as mining over a multilingual corpus
with a multilingual encoder does. XQuAD is parallel, so a German question's best-ranked "negative" is often
the Spanish translation of its own context: a false negative, the kind multilingual mining is full of, which
plain InfoNCE pushes away.
``--pipeline teacher`` scores the rows with a teacher that knows the answer: ``label_teacher`` below, the true
label (is this passage the question's paragraph, in either language?) times ``TEACHER_MARGIN`` plus Gaussian
noise of ``--noise``, seeded per pair. A tiny model pre-trained on the bundled samples is fine-tuned from the
same start with each ``--distill-weight`` of ``--weights`` and with ``0`` (same data, order and seed), and
each is evaluated on the held-out articles: nDCG@10 of de questions over the es contexts and of es questions
over the de contexts (the cross-lingual retrieval the false negatives teach against), and of de, es and en
each over its own contexts.
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
TEACHER_MARGIN = 8.0  # logits: a relevant passage's lead over an irrelevant one, before noise
NOISE_ENV = "EMBEDMILL_TEACHER_NOISE"
# The rows' own instruction, stored as the checkpoints' query prompt: evaluation asks what fine-tuning taught.
SQUAD_TASK = get_reader("squad").task


def _folded(text: str) -> str:
    return " ".join(text.split())


@cache
def _paragraphs() -> tuple[dict[str, tuple[int, int]], dict[str, tuple[int, int]]]:
    """Each question's and each context's paragraph, (article, paragraph) in XQuAD's parallel order."""
    of_question, of_context = {}, {}
    for language in ("de", "es"):
        for a, article in enumerate(json.loads((XQUAD / f"xquad.{language}.json").read_text("utf-8"))["data"]):
            for p, paragraph in enumerate(article["paragraphs"]):
                of_context[_folded(paragraph["context"])] = (a, p)
                for question in paragraph["qas"]:
                    of_question[_folded(question["question"])] = (a, p)
    return of_question, of_context


def relevant(query: str, passage: str) -> bool:
    of_question, of_context = _paragraphs()
    return of_question.get(_folded(query), (-1, -1)) == of_context.get(_folded(passage))


def label_teacher(queries: list[str], passages: list[str]) -> np.ndarray:
    """A teacher that knows the answer: label x margin + noise, the noise a pure function of the pair."""
    noise = float(os.environ.get(NOISE_ENV, "1.0"))
    scores = []
    for query, passage in zip(queries, passages, strict=True):
        label = relevant(query, passage)
        seed = int.from_bytes(hashlib.blake2b(f"{query}\0{passage}".encode(), digest_size=8).digest(), "little")
        scores.append(label * TEACHER_MARGIN + noise * np.random.default_rng(seed).standard_normal())
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
    return scores


def _cross_lingual(scores: dict[str, float]) -> float:
    return (scores["de->es"] + scores["es->de"]) / 2


def _format(scores: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.4f}" for name, value in scores.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--lr", default="5e-4", help="fine-tuning learning rate")
    parser.add_argument("--noise", type=float, default=1.0, help="standard deviation of the teacher's noise")
    parser.add_argument(
        "--weights", type=float, nargs="+", default=[1.0, 5.0], help="the --distill-weight values set against none"
    )
    args = parser.parse_args()
    os.environ[NOISE_ENV] = str(args.noise)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        train_articles, held_out_articles = _split_xquad(work)
        _beam("--pipeline=finetune", *(f"--source=squad:{lang}={work / f'train.{lang}.json'}" for lang in ("de", "es")),
              f"--output={work / 'mined'}")
        _beam(
            "--pipeline=hardnegatives", f"--input={work / 'mined'}", f"--output={work / 'negatives'}",
            "--model=python:benchmarks.distillation:name_vectors", "--rank-window=1:7", "--num-negatives=7",
        )  # fmt: skip
        _beam("--pipeline=teacher", f"--input={work / 'negatives'}", f"--output={work / 'scored'}",
              "--model=python:benchmarks.distillation:label_teacher")
        runs = {"scored": work / "scored"}
        rows, false_negatives = map(sum, zip(*(_rows_and_false_negatives(run) for run in runs.values())))
        pretrained = work / "pretrained"
        _pretrain(work, pretrained)
        print(f"fine-tuning rows: {rows} (XQuAD de + es, {train_articles} articles; {held_out_articles} held out), "
              f"7 mined negatives each from both languages' contexts, {false_negatives} of them the row's own context "
              f"in the other language; teacher noise {args.noise}")
        print(f"pre-trained, held-out nDCG@10: {_format(_held_out_ndcg(pretrained, work))}", flush=True)
        weights = [*args.weights, 0.0]
        results: dict[float, list[dict[str, float]]] = {weight: [] for weight in weights}
        for seed in range(args.seeds):
            for weight in weights:
                output = work / f"finetuned-{seed}-{weight}"
                _train(
                    "finetune", *(argument for run in runs.values() for argument in ("--data", str(run))),
                    "--model", str(pretrained), "--output", str(output),
                    "--negatives", "7", "--batch-size", "32", "--max-steps", str(args.steps), "--lr", args.lr,
                    "--max-query-length", "64", "--max-passage-length", "128", "--num-workers", "0",
                    "--seed", str(seed), "--distill-weight", str(weight), "--save-every", "100000", "--no-progress",
                    "--instruction", SQUAD_TASK,
                )  # fmt: skip
                results[weight].append(_held_out_ndcg(output, work))
                print(f"seed {seed}, --distill-weight {weight}: {_format(results[weight][-1])}", flush=True)
        baseline = [_cross_lingual(scores) for scores in results[0.0]]
        print(f"\ncross-lingual held-out nDCG@10 (de->es, es->de), mean over {args.seeds} seeds:")
        print(f"  --distill-weight 0: {statistics.mean(baseline):.4f}")
        for weight in args.weights:
            distilled = [_cross_lingual(scores) for scores in results[weight]]
            gains = [a - b for a, b in zip(distilled, baseline, strict=True)]
            print(
                f"  --distill-weight {weight}: {statistics.mean(distilled):.4f}, gain {statistics.mean(gains):+.4f} "
                f"(per seed {', '.join(f'{gain:+.4f}' for gain in gains)})"
            )


def _rows_and_false_negatives(run: Path) -> tuple[int, int]:
    import pyarrow as pa

    manifest = json.loads((run / "manifest.json").read_text())
    rows = [row for shard in manifest["shards"] for row in pa.ipc.open_stream((run / shard["path"]).read_bytes()).read_all().to_pylist()]
    return len(rows), sum(relevant(row["query"], text) for row in rows for text in row["negatives"])


def _pretrain(work: Path, pretrained: Path) -> None:
    mined = work / "pretrain-samples"
    _beam(*(f"--source={kind}=mining/samples/{kind}/*" for kind in ("sbert", "nllb", "ccnews")), f"--output={mined}")
    _train(
        "pretrain", "--data", str(mined), "--model", "tiny", "--output", str(pretrained), "--batch-size", "32",
        "--max-steps", "100", "--lr", "5e-4", "--max-query-length", "32", "--max-passage-length", "64",
        "--num-workers", "0", "--save-every", "1000", "--no-progress",
    )  # fmt: skip


if __name__ == "__main__":
    main()
