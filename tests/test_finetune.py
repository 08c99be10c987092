"""Fine-tuning (``python -m training finetune``): instruction prompts on queries, hard negatives, and that it helps."""

import hashlib
import json
import math
from pathlib import Path

import pyarrow as pa
import pytest
import torch

import beam_runner
from mining.sources import get_reader
from schemas.pairs import FINETUNE_SCHEMA, TEACHER_SCORES
from tests.training_fixtures import REPO, mine_samples, one_thread, pair_rows, write_mined_output
from training import evaluation
from training.checkpoint import stored_run
from training.cli import main
from training.encoder import Encoder
from training.loss import InfoNCELoss
from training.prompts import E5, InstructPrompts, Prompts, stored_prompts
from training.shard_store import shards_by_source
from training.stream import PairStream
from training.trainer import PretrainConfig, pretrain, steps_in_epochs

XQUAD = REPO.parent / "shared" / "data" / "xquad"
TASK = get_reader("squad").task  # the XQuAD rows' own, so evaluation asks what fine-tuning taught


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


def test_instructions_go_on_queries_only_and_exactly_once():
    prompts = InstructPrompts("Find the answer", passage="passage: ")
    assert prompts.format("who?", "query") == "Instruct: Find the answer\nQuery: who?"
    assert prompts.format("who?", "query", "Row task") == "Instruct: Row task\nQuery: who?"
    formatted = "Instruct: Own task\nQuery: who?"
    assert prompts.format(formatted, "query", "Row task") == formatted
    assert prompts.format(prompts.format("who?", "query"), "query") == prompts.format("who?", "query")
    assert prompts.format("text", "passage", "Row task") == "passage: text"
    assert InstructPrompts("T").format("text", "passage") == "text"
    assert E5.format("who?", "query", "Row task") == "query: who?"  # fixed prefixes ignore tasks
    # A checkpoint stores the default task's query prefix; reading it back gives the instruction format again.
    assert stored_prompts(prompts.query, prompts.passage) == prompts
    assert stored_prompts("query: ", "passage: ") == Prompts()


class _RecordingTokenizer:
    def __init__(self):
        self.texts: list[str] = []

    def __call__(self, texts, **options):
        self.texts += texts
        ids = torch.ones(len(texts), 3, dtype=torch.long)
        return {"input_ids": ids, "attention_mask": ids}


def _finetune_output(directory: Path) -> str:
    """A fine-tuning output as the instruct pipeline writes it: a task column, some queries formatted already,
    and columns training does not read."""
    rows = []
    for i in range(8):
        query = f"question {i}" if i % 2 else f"Instruct: Own task {i}\nQuery: question {i}"
        rows.append(
            {
                "id": hashlib.sha256(str(i).encode()).hexdigest()[:32], "query": query, "passage": f"answer {i}",
                "negatives": [f"wrong {i}/{k}" for k in range(3)], "source": "instruct", "query_lang": "en",
                "passage_lang": "en", "query_lang_score": 0.9, "passage_lang_score": 0.9, "task": f"Task {i}",
                "task_type": "retrieval", "instruction": f"Task {i}",
            }
        )  # fmt: skip
    schema = FINETUNE_SCHEMA.append(pa.field("task_type", pa.string())).append(pa.field("instruction", pa.string()))
    write_mined_output(str(directory), {"instruct": rows}, shards_per_source=1, schema=schema)
    return str(directory)


def test_loader_formats_each_row_with_its_task(tmp_path):
    tokenizer = _RecordingTokenizer()
    stream = PairStream(
        shards_by_source([_finetune_output(tmp_path / "instruct")]), tokenizer, batch_size=8, max_negatives=2,
        default_prompts=InstructPrompts("Default task", passage="passage: "),
    )  # fmt: skip
    batch = stream.materialise(next(stream.schedule.batches()))
    queries, passages, negatives = tokenizer.texts[:8], tokenizer.texts[8:16], tokenizer.texts[16:]
    assert len(negatives) == 16 and batch.negatives["input_ids"].shape[0] == 16
    for query in queries:
        assert query.count("Instruct: ") == 1 and query.count("\nQuery: ") == 1, query
        i = int(query.rsplit(" ", 1)[1])
        expected = f"Own task {i}" if i % 2 == 0 else f"Task {i}"
        assert query == f"Instruct: {expected}\nQuery: question {i}"
    assert all(text.startswith("passage: ") and "Instruct" not in text for text in passages + negatives)


def test_epochs_count_every_source_pass(tmp_path):
    output = write_mined_output(str(tmp_path / "out"), {"a": pair_rows("a", 70), "b": pair_rows("b", 10)})
    assert steps_in_epochs(shards_by_source([output]), batch_size=32, epochs=1) == 3 + 1
    assert steps_in_epochs(shards_by_source([output]), batch_size=32, epochs=2.5) == 10


def _xquad_ndcg(checkpoint: Path, language: str = "en") -> float:
    encoder = evaluation.own_encoder(Encoder.from_pretrained(checkpoint), 64)
    data = {language: evaluation.retrieval_set(str(XQUAD / f"xquad.{language}.json"))}
    return evaluation.evaluate_retrieval(encoder, data)["mean"]["ndcg@10"]


def test_finetuning_a_pretrained_model_improves_retrieval_on_a_held_out_language(tmp_path):
    pretrained = tmp_path / "pretrained"
    pretrain(
        PretrainConfig(
            data=[str(mine_samples(tmp_path / "mined"))], output=str(pretrained), batch_size=32, max_steps=100,
            lr=5e-4, max_query_length=32, max_passage_length=64, num_workers=0, save_every=1000, progress=False,
            export_max_length=512,  # both models are evaluated on whole XQuAD contexts, not their trained lengths
        )
    )  # fmt: skip
    samples, xquad = tmp_path / "finetune-samples", tmp_path / "xquad"
    beam_runner.main(["--pipeline", "finetune", "--output", str(samples)])
    beam_runner.main(
        [
            "--pipeline", "finetune", "--output", str(xquad),
            "--source", f"squad:de={XQUAD / 'xquad.de.json'}", "--source", f"squad:es={XQUAD / 'xquad.es.json'}",
        ]
    )  # fmt: skip

    finetuned = tmp_path / "finetuned"
    main(
        [
            "finetune", "--data", str(samples), "--data", str(xquad), "--model", str(pretrained),
            "--output", str(finetuned), "--negatives", "7", "--batch-size", "32", "--max-steps", "60", "--lr", "5e-4",
            "--max-query-length", "96", "--max-passage-length", "128", "--export-max-length", "512",
            "--instruction", TASK, "--num-workers", "1",
            "--save-every", "1000", "--log-every", "10", "--no-progress",
            "--eval-task", f"retrieval={XQUAD / 'xquad.en.json'}", "--eval-every", "60",
        ]
    )  # fmt: skip
    run = stored_run(finetuned)
    assert run.step == 60 and run.config["max_negatives"] == 7 and run.config["instruction"] == TASK
    encoder = Encoder.from_pretrained(finetuned)
    assert encoder.prompts == InstructPrompts(TASK, passage="passage: ")  # the pre-trained model's passage prefix

    before, after = _xquad_ndcg(pretrained), _xquad_ndcg(finetuned)
    print(f"XQuAD en nDCG@10: pre-trained {before:.4f}, fine-tuned {after:.4f}")
    assert after > before + 0.03, (before, after)
    # The evaluation hooks ran during fine-tuning, on the instruction-formatted queries the checkpoint stores.
    metrics = [json.loads(line) for line in (finetuned / "metrics.jsonl").read_text().splitlines()]
    evaluated = {record["step"]: record["retrieval/ndcg@10"] for record in metrics if "retrieval/ndcg@10" in record}
    assert list(evaluated) == [0, 60] and evaluated[60] == pytest.approx(after, abs=1e-3)


def test_distillation_is_kl_from_the_teacher_over_each_rows_group():
    torch.manual_seed(0)
    unit = lambda *shape: torch.nn.functional.normalize(torch.randn(*shape), dim=-1)
    queries, passages, negatives = unit(3, 8), unit(3, 8), unit(3, 8)
    queries.requires_grad_()
    counts = torch.tensor([2, 0, 1])  # row 0 owns negatives 0-1, row 2 negative 2
    nan = float("nan")
    teacher = torch.tensor([[3.0, 1.0, 0.0], [nan, nan, nan], [0.5, 2.0, nan]])
    temperature = 0.05
    plain = InfoNCELoss(temperature)(queries, passages, negatives)
    loss = InfoNCELoss(temperature, distill_weight=0.5)(queries, passages, negatives, counts, teacher)

    expected = 0.0
    for row, group in ((0, [passages[0], negatives[0], negatives[1]]), (2, [passages[2], negatives[2]])):
        student = torch.log_softmax(queries[row] @ torch.stack(group).T / temperature, dim=0)
        target = torch.softmax(teacher[row, : len(group)], dim=0)
        expected = expected + (target * (target.log() - student)).sum()
    torch.testing.assert_close(loss, plain + 0.5 * expected / 3)
    loss.backward()
    assert queries.grad.isfinite().all()


def test_loader_reads_teacher_scores_aligned_with_the_negatives_used(tmp_path):
    rows = pair_rows("scored", 4, negatives=3)
    for index, row in enumerate(rows):
        row["task"] = "T"
        row["teacher_scores"] = None if index == 1 else [float(index), 1.0, 2.0, 3.0]
    assert TEACHER_SCORES in FINETUNE_SCHEMA.names
    output = write_mined_output(str(tmp_path / "scored"), {"scored": rows}, shards_per_source=1, schema=FINETUNE_SCHEMA)
    stream = PairStream(shards_by_source([output]), _RecordingTokenizer(), batch_size=4, max_negatives=2)
    batch = stream.materialise(next(stream.schedule.batches()))
    assert batch.negative_counts.tolist() == [2, 2, 2, 2]
    by_id = dict(zip(batch.ids, batch.teacher_scores.tolist(), strict=True))
    for index, row in enumerate(rows):
        scores = by_id[row["id"]]
        if index == 1:
            assert all(math.isnan(score) for score in scores)  # not distilled
        else:
            assert scores == [float(index), 1.0, 2.0]
