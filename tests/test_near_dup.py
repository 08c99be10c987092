"""Near-duplicate removal: star contraction against union-find, bucket keys, and whole runs on planted copies."""

import itertools
import json
import random
from collections import defaultdict
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to

import beam_runner
from mining import minhash, near_dup
from mining.minhash import Shingling
from mining.records import new_pair
from pipelines.near_dup import ResolveClusters
from schemas.manifest import Manifest
from tests.conftest import SHARED_DATA, write_lines


def components(edges: list[tuple[str, str]]) -> dict[str, str]:
    """Union-find: every node with a smaller node in its component -> the component's smallest node."""
    parent = {}

    def root(node):
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for larger, smaller in edges:
        first, second = root(larger), root(smaller)
        parent[max(first, second)] = min(first, second)
    return {node: root(node) for node in list(parent) if root(node) != node}


def graph(shape: str, size: int, rng: random.Random) -> list[tuple[str, str]]:
    nodes = [f"{rng.getrandbits(64):016x}" for _ in range(size)]
    if shape == "path":
        pairs = itertools.pairwise(nodes)
    elif shape == "tree":
        pairs = ((nodes[i], nodes[rng.randrange(i)]) for i in range(1, size))
    else:  # many small random components
        pairs = ((nodes[i], nodes[(i // 20) * 20 + rng.randrange(20)]) for i in range(size))
    return [(max(a, b), min(a, b)) for a, b in pairs if a != b]


def contract(edges, rounds):
    """The star rounds as the pipeline runs them, with dicts for shuffles."""
    for _ in range(rounds):
        neighbours = defaultdict(list)
        for larger, smaller in edges:
            neighbours[larger].append(smaller)
            neighbours[smaller].append(larger)
        large = [edge for node, group in neighbours.items() for edge in near_dup.large_star(node, group)]
        smaller_neighbours = defaultdict(list)
        for larger, smaller in large:
            smaller_neighbours[larger].append(smaller)
        edges = [edge for node, group in smaller_neighbours.items() for edge in near_dup.small_star(node, group)]
    smaller_neighbours = defaultdict(list)
    for larger, smaller in edges:
        smaller_neighbours[larger].append(smaller)
    return {node: near_dup.cluster_of(group) for node, group in smaller_neighbours.items()}


@pytest.mark.parametrize("shape,size", [("path", 200), ("tree", 5000), ("clusters", 5000)])
def test_star_rounds_find_the_components(shape, size):
    edges = graph(shape, size, random.Random(size))
    clusters = contract(edges, rounds=near_dup.NearDupOptions.rounds)
    assert all(resolved for _, resolved in clusters.values())
    assert {node: cluster for node, (cluster, _) in clusters.items()} == components(edges)


def test_too_few_rounds_only_ever_keep_too_much():
    edges = graph("path", 2000, random.Random(7))
    clusters = contract(edges, rounds=1)
    truth = components(edges)
    assert not all(resolved for _, resolved in clusters.values())
    # Every pair dropped is in a component, and no component loses its smallest id.
    assert set(clusters) <= set(truth) and not set(truth.values()) & set(clusters)


def test_resolve_clusters_on_beam():
    rng = random.Random(3)
    edges = graph("tree", 1500, rng) + graph("path", 60, rng) + graph("clusters", 1500, rng)
    expected = sorted(components(edges).items())
    with beam.Pipeline(runner=FnApiRunner()) as pipeline:
        clusters = pipeline | beam.Create(edges) | ResolveClusters(rounds=near_dup.NearDupOptions.rounds)
        assert_that(clusters, equal_to(expected))


def _record(record_id, query, passage, source="ccnews", lang="en"):
    record = new_pair(source, query, passage, query_lang=lang, passage_lang=lang)
    record.update(id=record_id, query_lang=lang, passage_lang=lang)
    return record


PASSAGE = "The Panthers defense gave up just 308 points, ranking sixth in the league, while also leading the NFL."


def _keys(record, options, passage_dedup=True):
    hasher = options.hasher()
    return {key for key, _ in near_dup.band_keys([record], hasher, options, {record["source"]: passage_dedup})}


def test_bucket_keys_follow_scope_text_and_languages():
    options = near_dup.NearDupOptions()
    base = _keys(_record("1", "Title", PASSAGE), options)
    assert len(base) == options.bands[0]
    assert _keys(_record("2", "Other title", PASSAGE.upper()), options) == base
    assert not _keys(_record("3", "Title", PASSAGE, lang="de"), options) & base
    assert not _keys(_record("4", "Title", PASSAGE, source="mc4"), options) & base
    across = near_dup.NearDupOptions(scope="all")
    assert _keys(_record("5", "Title", PASSAGE, source="mc4"), across) == _keys(_record("6", "T", PASSAGE), across)
    # Where a passage answers many queries, the query must be alike too.
    def qa_keys(record_id, query):
        return _keys(_record(record_id, query, PASSAGE), options, passage_dedup=False)

    assert not qa_keys("7", "Who?") & qa_keys("8", "When?")
    assert qa_keys("9", "Who won?") == qa_keys("10", "who won")
    assert _keys(_record("11", "Title", "?!"), options) == set()


def test_word_shingles_and_pair_text():
    options = near_dup.NearDupOptions(shingling=Shingling("word", 3), text="pair")
    assert _keys(_record("1", "Title", PASSAGE), options) == _keys(_record("2", "title!", PASSAGE + " "), options)
    # A question of its own makes the pair text another (word 3-gram Jaccard 0.52; one word, "Another" for
    # "Title", leaves it at 0.89, above the threshold, a near-copy that only chance keeps out of a bucket).
    question = "Which team gave up the fewest points that season, and who led the league?"
    assert not _keys(_record("1", "Title", PASSAGE), options) & _keys(_record("2", question, PASSAGE), options)


def _paragraphs(code: str, count: int) -> list[dict]:
    data = json.loads((SHARED_DATA / "xquad" / f"xquad.{code}.json").read_text("utf-8"))
    return [paragraph for article in data["data"] for paragraph in article["paragraphs"]][:count]


def _edit_one_word(text: str, code: str) -> str:
    if code == "zh":
        return text[:40] + "某" + text[41:]
    words = text.split(" ")
    words[len(words) // 2] = "Zzyzx"
    return " ".join(words)


def _jaccard(text: str, other: str) -> float:
    shingles, other_shingles = set(minhash.shingles(text)), set(minhash.shingles(other))
    return len(shingles & other_shingles) / len(shingles | other_shingles)


def planted_corpus(root: Path) -> dict:
    """News in three languages where every third article has near-copies, and QA pairs with
    a near-copy of a question; returns how many of each kind were planted.

    Copies are planted where their shingles' Jaccard similarity is at least 0.93, where 9 bands of
    13 rows miss about one pair in a hundred; nearer the 0.8 threshold, whether a pair shares a
    band is chance (at 0.85, three pairs in ten do not), so the count would depend on the hash.
    """
    articles, planted = [], {"near_duplicate": 0, "duplicate_passage": 0}
    added = {"en": " Officials confirmed it.", "de": " Das wurde bestätigt.", "zh": "官员证实了这一点。"}
    # Titles in the article's script: a Latin title declared Chinese is a language mismatch at any length.
    label = {"en": "en", "de": "de", "zh": "中文"}
    for code in ("en", "de", "zh"):
        for index, paragraph in enumerate(_paragraphs(code, 24)):
            text = paragraph["context"]
            articles.append({"title": f"{label[code]} article {index}", "text": text, "language": code})
            copies = [_edit_one_word(text, code), text + added[code]]
            if index % 3 == 0 and min(_jaccard(text, copy) for copy in copies) >= 0.93:
                articles += [
                    {"title": f"{label[code]} copy {index}.{n}", "text": copy, "language": code}
                    for n, copy in enumerate(copies)
                ]
                # Case and punctuation alone make an exact duplicate passage, found before near-dup.
                shout = text.upper().replace(",", ";")
                articles.append({"title": f"{label[code]} shout {index}", "text": shout, "language": code})
                planted["near_duplicate"] += len(copies)
                planted["duplicate_passage"] += 1
    write_lines(root / "ccnews" / "news.jsonl", articles)
    qa = []
    for paragraph in _paragraphs("en", 10):
        questions = [qa_item["question"] for qa_item in paragraph["qas"]]
        qa += [[question, paragraph["context"]] for question in questions]
        qa.append([questions[0].rstrip("?") + "s?", paragraph["context"]])
        planted["near_duplicate"] += 1
    write_lines(root / "sbert" / "qa.jsonl", qa)
    return planted


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    return root, planted_corpus(root)


def run(root: Path, output: Path, *extra: str) -> Manifest:
    args = [f"--source=ccnews={root}/ccnews/*", f"--source=sbert:en={root}/sbert/*", f"--output={output}", *extra]
    assert beam_runner.main(args) == 0
    return Manifest.model_validate_json((output / "manifest.json").read_text("utf-8"))


@pytest.fixture(scope="module")
def mined(corpus, tmp_path_factory):
    root, planted = corpus
    output = tmp_path_factory.mktemp("out")
    return output, run(root, output, "--shard-size-mb=0.05"), planted


def test_planted_copies_are_dropped_and_one_per_cluster_stays(mined):
    output, manifest, planted = mined
    assert {reason: manifest.totals.dropped[reason] for reason in planted} == planted
    assert manifest.options["near_dup"]["bands"] == 9 and manifest.options["near_dup"]["rows_per_band"] == 13
    tables = [pa.ipc.open_stream(output / shard.path).read_all() for shard in manifest.shards]
    rows = {row["id"]: row for table in tables for row in table.to_pylist()}
    rejected = [json.loads(line) for line in (output / "rejected" / "near_duplicate.jsonl").open()]
    assert len(rejected) == planted["near_duplicate"]
    for dropped in rejected:
        cluster = dropped["detail"].removeprefix("cluster ")
        kept = rows[cluster]
        assert cluster < dropped["id"] and kept["source"] == dropped["source"]
        assert kept["passage_lang"] == dropped["passage_lang"]
        if dropped["source"] == "sbert":
            assert kept["passage"] == dropped["passage"]
    questions = [row for row in rows.values() if row["source"] == "sbert"]
    assert len(questions) == len({row["query"] for row in questions}) == manifest.sources["sbert"].output


def test_off_keeps_them(corpus, tmp_path):
    root, _ = corpus
    manifest = run(root, tmp_path, "--near-dup=off")
    assert "near_duplicate" not in manifest.totals.dropped and manifest.options["near_dup"] == "off"


def test_same_shards_whatever_the_worker_count(corpus, mined, tmp_path):
    output, first, _ = mined
    root, _ = corpus
    second = run(
        root, tmp_path, "--shard-size-mb=0.05", "--direct_num_workers=2", "--direct_running_mode=multi_processing"
    )
    assert [(s.path, s.sha256) for s in second.shards] == [(s.path, s.sha256) for s in first.shards]
    assert second.totals == first.totals
    assert (tmp_path / "rejected" / "near_duplicate.jsonl").read_bytes() == (
        output / "rejected" / "near_duplicate.jsonl"
    ).read_bytes()
