import re
from collections import Counter
from itertools import islice
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pytest
import torch

from schemas.manifest import ManifestError
from tests.training_fixtures import one_thread, pair_rows, tiny_encoder, write_mined_output
from training.permutation import Permutation
from training.prompts import Prompts
from training.schedule import Schedule
from training.shard_store import ShardIntegrityError, ShardRef, ShardStore, shards_by_source
from training.stream import PairLoader, PairStream

SIZES = {"alpha": 50, "beta": 23, "gamma": 9}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def mined(tmp_path_factory) -> str:
    rows = {name: pair_rows(name, size, negatives=2 if name == "beta" else 0) for name, size in SIZES.items()}
    return write_mined_output(str(tmp_path_factory.mktemp("mined")), rows)


@pytest.fixture(scope="module")
def tokenizer(mined):
    texts = [row["query"] + " " + row["passage"] for name, size in SIZES.items() for row in pair_rows(name, size, 2)]
    return tiny_encoder(texts + ["query: passage:"]).tokenizer


def stream(mined, tokenizer, **options) -> PairStream:
    options = {"batch_size": 8, "seed": 3, "cache_dir": Path("/nonexistent"), **options}
    return PairStream(shards_by_source([mined]), tokenizer, **options)


def take(batches, count: int) -> list:
    return list(islice(batches, count))


@pytest.mark.parametrize("size", [1, 2, 3, 64, 1000, 4097])
def test_permutation_is_a_bijection_that_depends_on_the_seed(size):
    order = Permutation(size, [1, 2])(np.arange(size))
    assert sorted(order.tolist()) == list(range(size))
    if size > 3:
        assert not np.array_equal(order, Permutation(size, [1, 3])(np.arange(size)))
        assert not np.array_equal(order, np.arange(size))
    np.testing.assert_array_equal(Permutation(size, [1, 2])(np.arange(size)[::-1]), order[::-1])


def test_each_pass_over_a_source_uses_every_row_once_across_ranks_and_workers(mined, tokenizer):
    world_size, steps = 2, 60
    per_rank = [
        take(PairLoader(stream(mined, tokenizer, rank=rank, world_size=world_size), num_workers=2), steps)
        for rank in range(world_size)
    ]
    order = {name: [] for name in SIZES}
    for step, shares in enumerate(zip(*per_rank, strict=True)):
        assert [share.step for share in shares] == [step] * world_size
        assert len({share.source for share in shares}) == 1, "a global batch comes from one source"
        ids = [row for share in shares for row in share.ids]
        assert len(ids) == shares[0].global_size == len(set(ids))
        assert 4 <= len(ids) <= 8
        assert abs(len(shares[0]) - len(shares[1])) <= 1
        order[shares[0].source] += ids
    all_ids = {name: {row["id"] for row in pair_rows(name, size)} for name, size in SIZES.items()}
    for name, size in SIZES.items():
        passes = [order[name][start : start + size] for start in range(0, len(order[name]), size)]
        assert len(passes) >= 3, f"{name} was read in only {len(passes)} passes"
        for complete in passes[:-1]:
            assert set(complete) == all_ids[name] and len(complete) == size
        assert len(set(passes[-1])) == len(passes[-1])
        assert passes[0] != passes[1], "every pass is shuffled anew"


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_sources_are_drawn_with_probability_rows_to_the_alpha(alpha):
    sizes = [10_000, 100, 1]
    schedule = Schedule(["a", "b", "c"], sizes, batch_size=1, seed=7, alpha=alpha)
    drawn = Counter(batch.source for batch in islice(schedule.batches(), 20_000))
    expected = np.asarray(sizes, dtype=float) ** alpha
    expected /= expected.sum()
    observed = np.asarray([drawn[i] for i in range(3)]) / 20_000
    np.testing.assert_allclose(observed, expected, atol=0.012)


def test_schedule_resumes_at_any_step_including_across_blocks():
    schedule = Schedule(["a", "b"], [30, 7], batch_size=4, seed=1, alpha=0.5)
    full = take(schedule.batches(), 9000)
    for start in (1, 17, 4096, 4097, 8999):
        assert take(schedule.batches(start), 1) == full[start : start + 1]
    assert full != take(Schedule(["a", "b"], [30, 7], batch_size=4, seed=2, alpha=0.5).batches(), 9000)


def assert_same_batches(left, right):
    assert len(left) == len(right)
    for a, b in zip(left, right, strict=True):
        assert (a.step, a.source, a.ids) == (b.step, b.source, b.ids)
        for side in ("queries", "passages"):
            for name in ("input_ids", "attention_mask"):
                assert torch.equal(getattr(a, side)[name], getattr(b, side)[name])


@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")  # more workers than cores, on purpose
def test_same_batches_whatever_the_worker_count_and_after_resuming(mined, tokenizer):
    reference = take(iter(stream(mined, tokenizer)), 14)
    assert_same_batches(take(PairLoader(stream(mined, tokenizer), num_workers=1), 14), reference)
    assert_same_batches(take(PairLoader(stream(mined, tokenizer), num_workers=4), 14), reference)

    interrupted = PairLoader(stream(mined, tokenizer), num_workers=2)
    take(interrupted, 5)
    state = interrupted.state_dict()
    assert state["step"] == 5
    resumed = PairLoader(stream(mined, tokenizer), num_workers=3)
    resumed.load_state_dict(state)
    assert_same_batches(take(resumed, 9), reference[5:])

    with pytest.raises(ValueError, match="seed was 3, is 4"):
        stream(mined, tokenizer, seed=4).load_state_dict(state)


class RecordingTokenizer:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.calls: list[list[str]] = []

    def __call__(self, texts, **options):
        self.calls.append(texts)
        return self.tokenizer(texts, **options)


def test_prefixes_per_source_hard_negatives_and_batched_tokenisation(mined, tokenizer):
    recording = RecordingTokenizer(tokenizer)
    symmetric = Prompts(query="query: ", passage="query: ")
    batches = take(iter(stream(mined, recording, prompts={"beta": symmetric}, max_negatives=1)), 12)
    assert len(recording.calls) == sum(3 if batch.negatives is not None else 2 for batch in batches)
    calls = iter(recording.calls)
    for batch in batches:
        queries, passages = next(calls), next(calls)
        assert len(queries) == len(passages) == len(batch) == len(batch.passage_keys)
        assert all(text.startswith("query: ") for text in queries)
        passage_prefix = "query: " if batch.source == "beta" else "passage: "
        assert all(text.startswith(passage_prefix) for text in passages)
        if batch.source == "beta":
            negatives = next(calls)
            assert len(negatives) == len(batch) == len(batch.negatives["input_ids"]) == len(batch.negative_keys)
            assert all(text.startswith("query: beta wrong answer") for text in negatives)
        else:
            assert batch.negatives is None
    assert {batch.source for batch in batches} == set(SIZES)

    two = next(batch for batch in stream(mined, tokenizer, max_negatives=5) if batch.source == "beta")
    assert len(two.negatives["input_ids"]) == 2 * len(two)


def test_tokens_are_truncated_to_each_sides_limit(mined, tokenizer):
    batch = next(iter(stream(mined, tokenizer, max_query_length=5, max_passage_length=7)))
    assert batch.queries["input_ids"].shape[1] == 5
    assert batch.passages["input_ids"].shape[1] == 7


def test_a_changed_shard_is_refused_naming_it(tmp_path, tokenizer):
    directory = write_mined_output(str(tmp_path / "mined"), {"alpha": pair_rows("alpha", 20)}, shards_per_source=1)
    shard = tmp_path / "mined/shards/alpha/alpha-00000-of-00001.arrow"
    data = bytearray(shard.read_bytes())
    data[-40] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardIntegrityError, match=re.escape(f"shard {shard} has sha256 ") + ".* but its manifest says"):
        next(iter(stream(directory, tokenizer)))
    shard.write_bytes(bytes(data[:-10]))
    expected = f"shard {shard} is truncated: {len(data) - 10} bytes but its manifest says {len(data)}"
    with pytest.raises(ShardIntegrityError, match=re.escape(expected)):
        next(iter(stream(directory, tokenizer)))
    shard.write_bytes(bytes(data) + b"more")
    expected = f"shard {shard} is {len(data) + 4} bytes but its manifest says {len(data)}"
    with pytest.raises(ShardIntegrityError, match=re.escape(expected)):
        next(iter(stream(directory, tokenizer)))
    shard.unlink()
    with pytest.raises(ShardIntegrityError, match=re.escape(f"shard {shard} is missing")):
        next(iter(stream(directory, tokenizer)))


def test_a_missing_remote_shard_is_refused_naming_it(tmp_path, tokenizer):
    url = write_mined_output("memory://embedmill-missing/mined", {"alpha": pair_rows("alpha", 20)}, shards_per_source=1)
    shard = shards_by_source([url])["alpha"][0]
    fsspec.filesystem("memory").rm(shard.url)
    try:
        with pytest.raises(ShardIntegrityError, match=re.escape(f"shard {shard.url} is missing")):
            next(iter(stream(url, tokenizer, cache_dir=tmp_path / "cache")))
        assert not list((tmp_path / "cache").glob("*.partial")), "nothing unverified is kept"
    finally:
        fsspec.filesystem("memory").rm("memory://embedmill-missing", recursive=True)


@pytest.mark.parametrize("kind", ["no directory", "no manifest", "a file"])
def test_a_directory_that_is_no_mined_output_is_refused_naming_it(tmp_path, kind):
    directory = tmp_path / "not-mined"
    if kind == "no manifest":
        directory.mkdir()
    elif kind == "a file":
        directory.write_text("{}")
    expected = f"{directory} is not a mined output directory: it has no manifest.json"
    with pytest.raises(ManifestError, match=re.escape(expected)):
        shards_by_source([str(directory)])


def test_remote_shards_are_fetched_once_into_the_cache(tmp_path, tokenizer):
    url = write_mined_output("memory://embedmill-test/mined", {"alpha": pair_rows("alpha", 20)}, shards_per_source=2)
    cache = tmp_path / "cache"
    first = take(iter(stream(url, tokenizer, cache_dir=cache)), 3)
    cached = sorted(path.name for path in cache.glob("*.arrow"))
    refs = shards_by_source([url])["alpha"]
    assert cached == sorted(f"{ref.sha256}.arrow" for ref in refs)

    memory = fsspec.filesystem("memory")
    for ref in refs:  # a second reader needs nothing remote but the manifest
        memory.rm(ref.url)
    assert_same_batches(take(iter(stream(url, tokenizer, cache_dir=cache)), 3), first)

    bad = ShardRef(refs[0].url.replace("00000", "00009"), refs[0].rows, refs[0].bytes, "0" * 64)
    memory.pipe(bad.url, b"x" * bad.bytes)
    with pytest.raises(ShardIntegrityError, match=re.escape(f"shard {bad.url} has sha256")):
        ShardStore(cache).table(bad)
    assert not list(cache.glob("0000*.arrow")) and not list(cache.glob("*.partial")), "nothing unverified is kept"
    memory.rm("memory://embedmill-test", recursive=True)


def test_shards_are_memory_mapped_not_read_into_memory(tmp_path):
    rows = pair_rows("big", 3000)
    for row in rows:
        row["passage"] = row["passage"] * 40
    directory = write_mined_output(str(tmp_path / "big"), {"big": rows}, shards_per_source=1)
    ref = shards_by_source([directory])["big"][0]
    assert ref.bytes > 2_000_000
    before = pa.total_allocated_bytes()
    table = ShardStore().table(ref)
    assert table.num_rows == 3000
    assert pa.total_allocated_bytes() - before < 100_000


def test_refuses_a_source_too_small_to_give_every_rank_a_row(mined, tokenizer):
    with pytest.raises(
        ValueError, match="source gamma: 9 rows in batches of up to 8 cannot give each of 5 ranks a row"
    ):
        stream(mined, tokenizer, world_size=5)
