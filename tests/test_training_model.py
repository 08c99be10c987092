import math
from functools import partial

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

import tests.training_distributed as shared
from tests.training_fixtures import one_thread, tiny_encoder
from training.encoder import Encoder
from training.loss import InfoNCELoss
from training.prompts import Prompts
from training.step import chunks, contrastive_backward, embed
from training.stream import PairBatch, passage_keys

CORPUS = shared.QUERIES + shared.PASSAGES + shared.NEGATIVES + ["query: passage: a the of"]
NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return tiny_encoder(CORPUS, **NO_DROPOUT)


@pytest.fixture(scope="module")
def saved(encoder, tmp_path_factory):
    directory = tmp_path_factory.mktemp("encoder")
    encoder.save_pretrained(directory)
    return directory


def test_embeddings_are_unit_length_and_ignore_padding(encoder):
    short = shared.tokenized(encoder, ["a short text"])
    padded = shared.tokenized(encoder, ["a short text", "a much longer text that forces padding onto the first one"])
    assert padded["input_ids"].shape[1] > short["input_ids"].shape[1]
    encoder.eval()
    with torch.no_grad():
        alone = encoder(**short)
        together = encoder(**padded)
    torch.testing.assert_close(together[0], alone[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(together.norm(dim=1), torch.ones(2))


def test_encode_batches_by_length_but_keeps_the_input_order(encoder):
    texts = ["x", "a much longer text than the others here", "medium length text", "tiny", "another one"]
    batched = encoder.encode(texts, "passage", batch_size=2)
    one_by_one = torch.cat([encoder.encode([text], "passage") for text in texts])
    torch.testing.assert_close(batched, one_by_one, rtol=0, atol=1e-6)
    assert not torch.allclose(batched, encoder.encode(texts, "query", batch_size=2)), "the prefix matters"
    symmetric = encoder.encode(texts, "passage", prompts=Prompts(passage="query: "))
    torch.testing.assert_close(symmetric, encoder.encode(texts, "query"))


def reference_info_nce(queries, candidates, temperature):
    """The textbook formula, one query at a time."""
    total = 0.0
    for i, query in enumerate(queries.tolist()):
        scores = [
            sum(a * b for a, b in zip(query, candidate, strict=True)) / temperature for candidate in candidates.tolist()
        ]
        top = max(scores)
        total += -(scores[i] - top - math.log(sum(math.exp(s - top) for s in scores)))
    return total / len(queries)


def test_info_nce_against_the_formula_and_sentence_transformers():
    torch.manual_seed(0)
    queries, passages, negatives = (F.normalize(torch.randn(6, 16), dim=-1) for _ in range(3))
    for temperature in (0.01, 0.05, 1.0):
        loss = InfoNCELoss(temperature)(queries, passages, negatives)
        expected = reference_info_nce(queries, torch.cat([passages, negatives]), temperature)
        assert loss.item() == pytest.approx(expected, rel=1e-5)
        mnrl = MultipleNegativesRankingLoss(model=None, scale=1 / temperature)
        assert loss.item() == pytest.approx(
            mnrl.compute_loss_from_embeddings([queries, passages, negatives], None).item(), rel=1e-5
        )
    without = InfoNCELoss(0.05)(queries, passages, torch.zeros(0, 16))
    assert without.item() == pytest.approx(reference_info_nce(queries, passages, 0.05), rel=1e-5)


def test_info_nce_in_row_chunks_has_the_same_value_and_gradients():
    torch.manual_seed(1)
    inputs = [F.normalize(torch.randn(7, 16), dim=-1) for _ in range(3)]
    results = []
    for rows in (1024, 3, 1):
        leaves = [tensor.clone().requires_grad_() for tensor in inputs]
        loss = InfoNCELoss(0.02, rows_per_chunk=rows)(*leaves)
        loss.backward()
        results.append([loss.detach(), *(leaf.grad for leaf in leaves)])
    for chunked in results[1:]:
        for actual, expected in zip(chunked, results[0], strict=True):
            torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-7)


def info_nce_without_duplicates(queries, candidates, row_keys, candidate_keys, temperature):
    """The textbook formula, each query over the candidates left once its duplicates' columns are removed."""
    total = 0.0
    for row, query in enumerate(queries.double()):
        kept = [column for column, key in enumerate(candidate_keys) if column == row or key != row_keys[row]]
        scores = candidates.double()[kept] @ query / temperature
        total -= torch.log_softmax(scores, 0)[kept.index(row)].item()
    return total / len(queries)


def test_a_passage_equal_to_a_rows_passage_is_no_negative_of_that_row():
    """Rows 1 and 3 share a passage (as SQuAD questions share a context); row 0's passage is also row 2's hard
    negative. Masked, the loss is each row's InfoNCE with those columns removed; in chunks too."""
    torch.manual_seed(3)
    passages, negatives = F.normalize(torch.randn(5, 16), dim=-1), F.normalize(torch.randn(4, 16), dim=-1)
    passages[3] = passages[1]
    negatives[2] = passages[0]
    # Each query near its passage, so a copy of that passage is what an unmasked loss pushes it from most.
    queries = F.normalize(passages + 0.3 * torch.randn(5, 16), dim=-1)
    keys = torch.tensor([10, 11, 12, 11, 14]), torch.tensor([20, 21, 10, 23])
    candidates = torch.cat([passages, negatives])
    expected = info_nce_without_duplicates(queries, candidates, keys[0].tolist(), torch.cat(keys).tolist(), 0.05)
    results = []
    for rows in (1024, 2):
        leaves = [tensor.clone().requires_grad_() for tensor in (queries, passages, negatives)]
        loss = InfoNCELoss(0.05, rows_per_chunk=rows)(*leaves, passage_keys=keys[0], negative_keys=keys[1])
        loss.backward()
        assert loss.item() == pytest.approx(expected, rel=1e-5)
        results.append([loss.detach(), *(leaf.grad for leaf in leaves)])
    for actual, reference in zip(*results, strict=True):
        torch.testing.assert_close(actual, reference, rtol=1e-5, atol=1e-7)
    unmasked = InfoNCELoss(0.05)(queries, passages, negatives)
    assert unmasked.item() > expected + 0.1
    distinct = torch.arange(5), torch.arange(5, 9)
    nothing_shared = InfoNCELoss(0.05)(queries, passages, negatives, passage_keys=distinct[0], negative_keys=distinct[1])
    assert nothing_shared.item() == pytest.approx(unmasked.item(), rel=1e-6)


def test_stream_keys_are_equal_for_passages_equal_up_to_case_and_punctuation():
    keys = passage_keys(["The river, in spring.", "the river in spring", "The river in autumn."]).tolist()
    assert keys[0] == keys[1] != keys[2]


def duplicate_batch(encoder: Encoder, masked: bool) -> PairBatch:
    """The shared batch with row 5's passage a copy of row 2's (in other case) and a hard negative equal to row 0's."""
    passages = list(shared.PASSAGES)
    passages[5] = passages[2].upper()
    negatives = [*shared.NEGATIVES, passages[0]]
    return PairBatch(
        step=0, source="test", global_size=len(shared.QUERIES), ids=shared.QUERIES,
        queries=shared.tokenized(encoder, shared.QUERIES), passages=shared.tokenized(encoder, passages),
        negatives=shared.tokenized(encoder, negatives),
        passage_keys=passage_keys(passages) if masked else None,
        negative_keys=passage_keys(negatives) if masked else None,
    )


def test_gradient_cache_masks_duplicates_as_the_plain_loss_does(encoder):
    encoder.train()
    loss_fn = InfoNCELoss(shared.TEMPERATURE)
    pairs = duplicate_batch(encoder, masked=True)
    plain = parameter_gradients(encoder, lambda: contrastive_backward(encoder, pairs, loss_fn))
    for chunk_size in (1, 3):
        cached = parameter_gradients(encoder, partial(contrastive_backward, encoder, pairs, loss_fn, chunk_size))
        assert_same_gradients(cached, plain)
    unmasked_pairs = duplicate_batch(encoder, masked=False)
    unmasked = parameter_gradients(encoder, lambda: contrastive_backward(encoder, unmasked_pairs, loss_fn))
    assert not torch.allclose(unmasked["loss"], plain["loss"])


def parameter_gradients(encoder, compute) -> dict:
    encoder.zero_grad(set_to_none=True)
    loss = compute()
    return {"loss": loss.detach().clone(), **shared.gradients(encoder)}


def assert_same_gradients(actual: dict, expected: dict, atol=1e-6):
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(actual[name], value, rtol=1e-4, atol=atol, msg=name)


def test_gradient_cache_gives_the_gradients_of_the_plain_loss(encoder):
    encoder.train()
    pairs = shared.batch(encoder)
    loss_fn = InfoNCELoss(shared.TEMPERATURE)
    plain = parameter_gradients(encoder, lambda: contrastive_backward(encoder, pairs, loss_fn))
    assert plain["model.embeddings.word_embeddings.weight"].abs().sum() > 0
    for chunk_size in (1, 3, 100):
        cached = parameter_gradients(encoder, partial(contrastive_backward, encoder, pairs, loss_fn, chunk_size))
        assert_same_gradients(cached, plain)


def test_activation_checkpointing_recomputes_layers_and_changes_no_gradient(saved):
    checkpointed = Encoder.from_pretrained(saved).train()
    pairs = shared.batch(checkpointed)
    loss_fn = InfoNCELoss(shared.TEMPERATURE)
    attention_calls = []
    checkpointed.model.encoder.layer[0].attention.register_forward_pre_hook(lambda *_: attention_calls.append(1))
    expected = parameter_gradients(checkpointed, partial(contrastive_backward, checkpointed, pairs, loss_fn))
    kept_activations = len(attention_calls)
    checkpointed.enable_activation_checkpointing()
    for chunk_size in (None, 3):
        attention_calls.clear()
        actual = parameter_gradients(
            checkpointed, partial(contrastive_backward, checkpointed, pairs, loss_fn, chunk_size)
        )
        assert_same_gradients(actual, expected)
        if chunk_size is None:
            assert len(attention_calls) == 2 * kept_activations, "each side's attention runs again in the backward pass"


def test_gradient_cache_replays_each_chunks_dropout(saved):
    """With dropout, the second pass must see the masks the loss saw: compare with chunked embedding under a graph."""
    noisy = Encoder.from_pretrained(saved, hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3).train()
    pairs = shared.batch(noisy)
    loss_fn = InfoNCELoss(shared.TEMPERATURE)

    def chunked_with_graph():
        sides = [pairs.queries, pairs.passages, pairs.negatives]
        embedded = (torch.cat([embed(noisy, piece) for piece in chunks(side, 3)]) for side in sides)
        loss = loss_fn(*embedded, passage_keys=pairs.passage_keys, negative_keys=pairs.negative_keys)
        loss.backward()
        return loss

    torch.manual_seed(11)
    expected = parameter_gradients(noisy, chunked_with_graph)
    torch.manual_seed(11)
    cached = parameter_gradients(noisy, lambda: contrastive_backward(noisy, pairs, loss_fn, 3))
    assert_same_gradients(cached, expected)
    after_cached = torch.rand(3)
    torch.manual_seed(11)
    parameter_gradients(noisy, chunked_with_graph)
    assert torch.equal(torch.rand(3), after_cached), "the replay leaves the random stream where one pass would"
    torch.manual_seed(12)
    other_masks = parameter_gradients(noisy, lambda: contrastive_backward(noisy, pairs, loss_fn, 3))
    assert not torch.allclose(other_masks["loss"], expected["loss"]), "dropout is active in this test"


def test_two_gloo_ranks_match_one_process_on_the_whole_batch(encoder, saved, tmp_path):
    encoder.train()
    single = parameter_gradients(
        encoder, lambda: contrastive_backward(encoder, shared.batch(encoder), InfoNCELoss(shared.TEMPERATURE))
    )
    chunk_sizes = [None, 2]
    mp.spawn(shared.run_rank, args=(2, str(saved), str(tmp_path), chunk_sizes), nprocs=2, join=True)
    for chunk_size in chunk_sizes:
        ranks = [load_file(tmp_path / f"rank{rank}-chunk{chunk_size}.safetensors") for rank in range(2)]
        for rank in ranks:
            rank["loss"] = rank["loss"].reshape(())
            assert_same_gradients(rank, single)


def test_saved_encoder_loads_in_sentence_transformers_with_the_same_embeddings(encoder, saved):
    texts = ["hello world", "question 3 about music", "an answer on food number 4 " * 20]
    model = SentenceTransformer(str(saved), device="cpu")
    assert model.prompts["query"] == "query: " and model.prompts["passage"] == "passage: "
    for kind in ("query", "passage"):
        ours = encoder.encode(texts, kind)
        theirs = model.encode(texts, prompt_name=kind, convert_to_tensor=True)
        torch.testing.assert_close(theirs.cpu(), ours, rtol=0, atol=1e-5)
    reloaded = Encoder.from_pretrained(saved)
    assert reloaded.prompts == encoder.prompts and reloaded.max_length == encoder.max_length
    torch.testing.assert_close(reloaded.encode(texts), encoder.encode(texts), rtol=0, atol=0)


def test_sentence_transformers_and_mteb_use_the_trained_prefixes(encoder, saved):
    """encode_query / encode_document, and MTEB's wrapper (offline: no task is downloaded), take our prompts."""
    from mteb.models.sentence_transformer_wrapper import SentenceTransformerEncoderWrapper

    texts = ["hello world", "an answer on food number 4"]
    model = SentenceTransformer(str(saved), device="cpu")
    torch.testing.assert_close(
        model.encode_document(texts, convert_to_tensor=True), encoder.encode(texts, "passage"), rtol=0, atol=1e-5
    )
    torch.testing.assert_close(
        model.encode_query(texts, convert_to_tensor=True), encoder.encode(texts, "query"), rtol=0, atol=1e-5
    )
    wrapped = SentenceTransformerEncoderWrapper(model)
    assert wrapped.model_prompts == {"query": "query: ", "document": "passage: "}

