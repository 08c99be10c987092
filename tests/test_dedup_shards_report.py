import hashlib
import io
import random

import pyarrow as pa
import pytest
from pydantic import ValidationError

from mining import dedup, run_store, shards
from mining.records import Drop, new_pair
from mining.report import FunnelReport, build_manifest, sampling_weights
from schemas import reasons
from schemas.manifest import Totals
from schemas.pairs import PAIR_SCHEMA, shard_row


def _record(query, passage, source="sbert", lang="en", record_id=None):
    record = new_pair(source, query, passage)
    record.update(id=record_id or hashlib.md5(f"{query}|{passage}".encode()).hexdigest(), query_lang=lang,
                  passage_lang=lang, query_lang_score=None, passage_lang_score=0.9)
    return record


def test_pair_key_ignores_case_punctuation_and_spacing():
    a = _record("What time is it?", "It is three o'clock.")
    b = _record("what time is it", "It is three o’clock!!")
    c = _record("What time is it?", "It is four o'clock.")
    assert dedup.pair_key(a) == dedup.pair_key(b) != dedup.pair_key(c)
    assert dedup.pair_key(_record("a b", "c")) != dedup.pair_key(_record("a", "b c"))


def test_passage_key_is_per_source_and_language_pair():
    base = _record("q1", "Same passage.")
    assert dedup.passage_key(base) == dedup.passage_key(_record("q2", "same passage"))
    assert dedup.passage_key(base) != dedup.passage_key(_record("q1", "Same passage.", source="ccnews"))
    assert dedup.passage_key(base) != dedup.passage_key(_record("q1", "Same passage.", lang="de"))


@pytest.mark.parametrize("seed", range(5))
def test_keep_smallest_id_whatever_the_order(seed):
    records = [_record("q", "p", record_id=f"{i:032x}") for i in (7, 3, 9, 1, 4)]
    random.Random(seed).shuffle(records)
    out = list(dedup.keep_smallest_id(iter(records), reasons.DUPLICATE_PAIR, b"\x01"))
    kept = [item for item in out if not isinstance(item, Drop)]
    assert [r["id"] for r in kept] == [f"{1:032x}"]
    assert sorted(d.record["id"] for d in out if isinstance(d, Drop)) == [f"{i:032x}" for i in (3, 4, 7, 9)]


def test_smallest_last_streams_a_group_of_ids_once():
    members = ((f"{i:032x}", ("later key",)) for i in (7, 3, 9, 1, 4))  # a generator: one pass only
    out = list(dedup.smallest_last(members, lambda member: member[0]))
    assert out[-1] == ((f"{1:032x}", ("later key",)), True)
    assert sorted(member[0] for member, kept in out[:-1] if not kept) == [f"{i:032x}" for i in (3, 4, 7, 9)]
    assert list(dedup.smallest_last(iter(()), lambda member: member[0])) == []


def test_shard_bytes_do_not_depend_on_row_order():
    records = [_record(f"query {i}", f"passage {i}") for i in range(3000)]
    first = shards.encode_shard(records)
    random.Random(1).shuffle(records)
    assert shards.encode_shard(records) == first
    table = pa.ipc.open_stream(first).read_all()
    assert table.schema.equals(PAIR_SCHEMA) and table.num_rows == 3000
    assert table.column("id").to_pylist() == sorted(r["id"] for r in records)
    assert len(pa.ipc.open_stream(first).read_all().to_batches()) == 3
    assert pa.ipc.open_stream(shards.encode_shard(records, compression="zstd")).read_all().equals(table)


@pytest.mark.parametrize("shard_format", ["stream", "file", "parquet"])
@pytest.mark.parametrize("compression", [None, "zstd"])
def test_a_shard_is_written_as_a_stream_of_its_rows_sorted_by_id(shard_format, compression):
    records = [_record(f"query {i}", f"passage {i}" * (i % 7), lang=("en", "de")[i % 3 == 0]) for i in range(2600)]
    for record in records[1500:1600]:
        record["query_lang_score"] = 0.5  # nulls in some record batches only
    packed = (shards.packed_row(record) for record in reversed(records))  # read once
    stream = io.BytesIO()
    entry, lengths = shards.write_shard("p", "sbert", packed, stream, PAIR_SCHEMA, compression, shard_format)
    data = stream.getvalue()
    rows = sorted((shard_row(record) for record in records), key=lambda row: row["id"])
    assert run_store.read_table(pa.BufferReader(data)).equals(pa.Table.from_pylist(rows, schema=PAIR_SCHEMA))
    assert data == shards.encode_shard(records, compression=compression, shard_format=shard_format)
    assert (entry.path, entry.source, entry.rows, entry.bytes) == ("p", "sbert", 2600, len(data))
    assert entry.sha256 == hashlib.sha256(data).hexdigest()
    german = sum(i % 3 == 0 for i in range(2600))
    assert entry.languages == {"de": german, "en": 2600 - german}
    assert entry.language_pairs == {"de": {"de": german}, "en": {"en": 2600 - german}}
    assert sorted(lengths) == ["de", "en"]
    for lang, sides in lengths.items():
        mine = [record for record in records if record["query_lang"] == lang]
        assert sides.query.count == sides.passage.count == len(mine)
        assert sides.query.sum == sum(len(record["query"]) for record in mine)
        assert sides.passage.sum == sum(len(record["passage"]) for record in mine)
    # Up to a record batch of rows, the bytes of a table encoded whole, as runs wrote them before streaming.
    first = sorted(records[:1000], key=lambda record: record["id"])
    whole = pa.Table.from_pylist([shard_row(record) for record in first], schema=PAIR_SCHEMA)
    assert shards.encode_shard(first[::-1], PAIR_SCHEMA, compression, shard_format) == run_store.encode_table(
        whole, compression, shard_format
    )


def test_shard_layout():
    assert shards.shard_count(0, 100) == 1 and shards.shard_count(250, 100) == 3
    assert shards.shard_path("nllb", 2, 10) == "shards/nllb/nllb-00002-of-00010.arrow"
    ids = [hashlib.md5(str(i).encode()).hexdigest() for i in range(10000)]
    counts = [0] * 4
    for record_id in ids:
        counts[shards.shard_index(record_id, 4)] += 1
    assert min(counts) > 2300


def _report(drops, inputs, size=2):
    report = FunnelReport(size)
    report.count_input("sbert", inputs)
    for drop in drops:
        report.add_drop(drop)
    return report


def test_reports_merge_to_the_same_result_in_any_split():
    drops = [Drop(_record(f"q{i}", f"p{i}", record_id=f"{i:032x}"), "duplicate_pair") for i in range(10)]
    whole = _report(drops, 10)
    parts = _report(drops[7:], 3).merge(_report(drops[:4], 4)).merge(_report(drops[4:7], 3))
    assert parts.counts == whole.counts
    assert [r["id"] for r in parts.samples["duplicate_pair"]] == [f"{i:032x}" for i in (0, 1)]
    assert parts.totals_for("sbert") == {"input": 10, "dead_letter": 0, "dropped": {"duplicate_pair": 10}}


def test_manifest_refuses_unconserved_totals():
    with pytest.raises(ValidationError, match="not conserved"):
        Totals(input=5, output=3, dropped={"x": 1}, dead_letter=0)
    report = _report([], 3)
    with pytest.raises(ValidationError, match="not conserved"):
        build_manifest("pretrain", PAIR_SCHEMA, {}, report, [], sampling_alpha=0.5)


def test_sampling_weights_follow_alpha():
    weights = sampling_weights({"big": 10000, "small": 100, "empty": 0}, alpha=0.5)
    assert weights == pytest.approx({"big": 100 / 110, "small": 10 / 110, "empty": 0.0})
    assert sampling_weights({"a": 3, "b": 1}, alpha=1.0) == pytest.approx({"a": 0.75, "b": 0.25})
