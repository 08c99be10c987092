"""Does distillation from teacher scores help? Fine-tuning with and without it, side by side, on a tiny model.

    python benchmarks/distillation.py [--seeds 2] [--steps 60] [--noise 1.0] [--weight 1.0]

The whole flow runs through the real pipelines: XQuAD de and es (the shared data) are mined with
``--pipeline finetune``, each language a run; ``--pipeline hardnegatives`` gives every row 7 negatives from
the other language's contexts (``--corpus``, a lexical encoder, ranks 1-7), as cross-lingual mining over a
multilingual corpus does. XQuAD is parallel, so a German question's best-ranked Spanish "negative" is often
the translation of its own context (names and numbers match): a false negative, the kind multilingual mining
is full of, which plain InfoNCE pushes away. ``--pipeline teacher`` scores the rows with a teacher that knows the answer:
``label_teacher`` below, the true label (is this passage the question's paragraph, in either language?) times
``TEACHER_MARGIN`` plus Gaussian noise of ``--noise``, seeded per pair. A tiny model pre-trained on the
bundled samples is fine-tuned from the same start with ``--distill-weight 1`` and ``0`` (same data, order and
seed), and each is evaluated on XQuAD en (a language it was not fine-tuned on): nDCG@10 of every question
over the 240 contexts.
"""

import argparse
import hashlib
import json
import os
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
XQUAD = REPO.parent / "shared" / "data" / "xquad"
TEACHER_MARGIN = 8.0  # logits: a relevant passage's lead over an irrelevant one, before noise
NOISE_ENV = "EMBEDMILL_TEACHER_NOISE"


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


def trigram_vectors(texts: list[str], kind: str) -> np.ndarray:
    """A lexical encoder for mining the negatives: hashed character trigrams, normalised."""
    vectors = np.zeros((len(texts), 4096), dtype=np.float32)
    for row, text in enumerate(texts):
        folded = f" {text.casefold()} "
        for start in range(len(folded) - 2):
            vectors[row, zlib.crc32(folded[start : start + 3].encode()) % 4096] += 1.0
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)


def _beam(*arguments: str) -> None:
    subprocess.run(
        [sys.executable, "beam_runner.py", *arguments], cwd=REPO, check=True, capture_output=True
    )


def _train(*arguments: str) -> None:
    subprocess.run([sys.executable, "-m", "training", *arguments], cwd=REPO, check=True, capture_output=True)


def _xquad_en_ndcg(checkpoint: Path) -> float:
    from training import evaluation
    from training.encoder import Encoder

    encoder = evaluation.own_encoder(Encoder.from_pretrained(checkpoint), 64)
    data = {"en": evaluation.retrieval_set(str(XQUAD / "xquad.en.json"))}
    return evaluation.evaluate_retrieval(encoder, data)["mean"]["ndcg@10"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--noise", type=float, default=1.0, help="standard deviation of the teacher's noise")
    parser.add_argument("--weight", type=float, default=1.0, help="the --distill-weight set against none")
    args = parser.parse_args()
    os.environ[NOISE_ENV] = str(args.noise)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        runs = {}
        for lang in ("de", "es"):
            _beam("--pipeline=finetune", f"--source=squad:{lang}={XQUAD / f'xquad.{lang}.json'}", f"--output={work / lang}")
        for lang, other in (("de", "es"), ("es", "de")):
            _beam(
                "--pipeline=hardnegatives", f"--input={work / lang}", f"--corpus={work / other}",
                f"--output={work / f'{lang}-negatives'}", "--model=python:benchmarks.distillation:trigram_vectors",
                "--rank-window=1:7", "--num-negatives=7",
            )  # fmt: skip
            _beam("--pipeline=teacher", f"--input={work / f'{lang}-negatives'}", f"--output={work / f'{lang}-scored'}",
                  "--model=python:benchmarks.distillation:label_teacher")
            runs[lang] = work / f"{lang}-scored"
        rows, false_negatives = map(sum, zip(*(_rows_and_false_negatives(run) for run in runs.values())))
        pretrained = work / "pretrained"
        _pretrain(work, pretrained)
        print(f"fine-tuning rows: {rows} (XQuAD de + es), 7 mined negatives each, {false_negatives} of them the row's "
              f"own context in the other language; teacher noise {args.noise}")
        print(f"pre-trained, XQuAD en nDCG@10: {_xquad_en_ndcg(pretrained):.4f}")
        results: dict[float, list[float]] = {args.weight: [], 0.0: []}
        for seed in range(args.seeds):
            for weight in results:
                output = work / f"finetuned-{seed}-{weight}"
                _train(
                    "finetune", *(argument for run in runs.values() for argument in ("--data", str(run))),
                    "--model", str(pretrained), "--output", str(output),
                    "--negatives", "7", "--batch-size", "32", "--max-steps", str(args.steps), "--lr", "5e-4",
                    "--max-query-length", "64", "--max-passage-length", "128", "--num-workers", "0",
                    "--seed", str(seed), "--distill-weight", str(weight), "--save-every", "100000", "--no-progress",
                )  # fmt: skip
                results[weight].append(_xquad_en_ndcg(output))
                print(f"seed {seed}, --distill-weight {weight}: XQuAD en nDCG@10 {results[weight][-1]:.4f}", flush=True)
        with_teacher, without = results[args.weight], results[0.0]
        gains = [a - b for a, b in zip(with_teacher, without, strict=True)]
        print(
            f"\nmean nDCG@10 over {args.seeds} seeds: distilled {statistics.mean(with_teacher):.4f}, "
            f"not distilled {statistics.mean(without):.4f}; gain {statistics.mean(gains):+.4f} "
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
