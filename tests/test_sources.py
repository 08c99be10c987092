import gzip

import pytest

import beam_runner
from mining.records import DeadLetter
from mining.sources import ReadLimits, SourceSpec, get_reader, kinds
from pipelines.io import match_files, open_file
from tests.conftest import write_lines


def _read(spec_text: str, limits=ReadLimits()):
    spec = SourceSpec.parse(spec_text)
    reader = get_reader(spec.kind)
    items = []
    for task in reader.plan(spec, match_files):
        items.extend(reader.read(task, open_file, limits))
    pairs = [item for item in items if not isinstance(item, DeadLetter)]
    letters = [item for item in items if isinstance(item, DeadLetter)]
    return pairs, letters


def test_registry_and_spec_parsing():
    assert {"sbert", "nllb", "ccnews"} <= set(kinds())
    assert SourceSpec.parse("sbert:deu=gs://b/x/*.jsonl.gz") == SourceSpec("sbert", "de", "gs://b/x/*.jsonl.gz")
    with pytest.raises(ValueError, match="KIND"):
        SourceSpec.parse("no-equals-sign")
    with pytest.raises(ValueError, match="unknown source kind"):
        get_reader("nope")


def test_sbert_pairs_and_every_malformed_kind(tmp_path):
    path = write_lines(
        tmp_path / "train.jsonl",
        [
            ["How tall is the tower?", "The tower is 300 metres tall."],
            ["Query", "Passage", "Negative one", "Negative two"],
            b"",
            b'["unterminated", ',
            {"query": "an object"},
            ["only one"],
            ["text", 42],
            b'["caf\xff\xfe", "bad bytes"]',
            ["x" * 200, "too long a line"],
        ],
    )
    pairs, letters = _read(f"sbert:en={path}", ReadLimits(max_line_bytes=100))
    assert [(p["query"], p["negatives"]) for p in pairs] == [
        ("How tall is the tower?", []),
        ("Query", ["Negative one", "Negative two"]),
    ]
    assert pairs[0]["_declared_query_lang"] == "en" and pairs[0]["_origin"] == f"{path}:1"
    assert [(letter.reason, letter.line) for letter in letters] == [
        ("invalid_json", 4), ("missing_field", 5), ("missing_field", 6), ("wrong_type", 7),
        ("invalid_utf8", 8), ("line_too_long", 9),
    ]
    assert all(letter.file == str(path) and letter.source == "sbert" for letter in letters)
    assert letters[0].payload == '["unterminated", '


def test_gzip_and_corrupt_gzip(tmp_path):
    good = [["Question number %d?" % i, "Answer number %d." % i] for i in range(50)]
    write_lines(tmp_path / "a.jsonl.gz", good, compress=True)
    pairs, letters = _read(f"sbert={tmp_path}/a.jsonl.gz")
    assert len(pairs) == 50 and not letters

    data = gzip.compress(b"".join(b'["q%d", "p%d"]\n' % (i, i) for i in range(300_000)), mtime=0)
    (tmp_path / "b.jsonl.gz").write_bytes(data[: len(data) // 2])
    pairs, letters = _read(f"sbert={tmp_path}/b.jsonl.gz")
    assert [letter.reason for letter in letters] == ["unreadable_file"]
    assert pairs, "records before the damage are kept"


def test_pattern_matching_nothing_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no file matches"):
        _read(f"sbert={tmp_path}/missing-*.jsonl")


def test_ccnews_fields(tmp_path):
    path = write_lines(
        tmp_path / "news.jsonl",
        [
            {"title": "Title one", "text": "Body one.", "language": "de", "url": "https://example.com/1"},
            {"title": "Title two", "maintext": "Body two."},
            {"title": None, "text": "No title"},
            {"title": 7, "text": "Number title"},
            {"title": "Bad language", "text": "Body", "language": "not a code"},
            ["not", "an", "object"],
        ],
    )
    pairs, letters = _read(f"ccnews:fr={path}")
    assert [(p["query"], p["passage"], p["_declared_passage_lang"]) for p in pairs] == [
        ("Title one", "Body one.", "de"),
        ("Title two", "Body two.", "fr"),
    ]
    assert [letter.reason for letter in letters] == ["missing_field", "wrong_type", "invalid_language", "wrong_type"]


def test_nllb_json_lines(tmp_path):
    path = write_lines(
        tmp_path / "nllb.jsonl",
        [
            {"translation": {"eng_Latn": "Good morning.", "deu_Latn": "Guten Morgen."}, "laser_score": 1.2},
            {"translation": {"fr": "Bonjour.", "es": "Buenos días."}},
            {"translation": {"fr": "Seul."}},
            {"translation": {"xx1": "a", "en": "b"}},
            {"laser_score": 1.0},
        ],
    )
    pairs, letters = _read(f"nllb={path}")
    assert [(p["query"], p["_declared_query_lang"], p["passage"], p["_declared_passage_lang"]) for p in pairs] == [
        ("Guten Morgen.", "de", "Good morning.", "en"),
        ("Bonjour.", "fr", "Buenos días.", "es"),
    ]
    assert all(p["_bilingual"] for p in pairs)
    assert [letter.reason for letter in letters] == ["wrong_type", "invalid_language", "missing_field"]


def test_nllb_aligned_files_by_prefix_and_glob(tatoeba_dir):
    pairs, letters = _read(f"nllb={tatoeba_dir}/tatoeba.fra-eng")
    english = (tatoeba_dir / "tatoeba.fra-eng.eng").read_text("utf-8").splitlines()
    french = (tatoeba_dir / "tatoeba.fra-eng.fra").read_text("utf-8").splitlines()
    assert not letters
    assert [(p["query"], p["passage"]) for p in pairs] == list(zip(french, english))
    assert {(p["_declared_query_lang"], p["_declared_passage_lang"]) for p in pairs} == {("fr", "en")}

    pairs, _ = _read(f"nllb={tatoeba_dir}/tatoeba.*-eng")
    languages = {p["_declared_query_lang"] for p in pairs}
    assert {"zh", "ru", "fr", "ko", "el", "he"} <= languages and len(languages) == 56
    assert {p["_declared_passage_lang"] for p in pairs} == {"en"}


def test_nllb_misaligned_and_orphan_files(tmp_path):
    (tmp_path / "b.deu-eng.deu").write_text("Eins\nZwei\nDrei\n", "utf-8")
    (tmp_path / "b.deu-eng.eng").write_text("One\nTwo\n", "utf-8")
    pairs, letters = _read(f"nllb={tmp_path}/b.deu-eng")
    assert [(p["query"], p["passage"]) for p in pairs] == [("Eins", "One"), ("Zwei", "Two")]
    assert [(letter.reason, letter.line, letter.payload) for letter in letters] == [("misaligned_line", 3, "Drei")]

    (tmp_path / "c.spa-eng.spa").write_text("Hola\n", "utf-8")
    with pytest.raises(FileNotFoundError, match="no counterpart"):
        _read(f"nllb={tmp_path}/c.spa-eng")
    with pytest.raises(ValueError, match="own languages"):
        _read(f"nllb:de={tmp_path}/b.deu-eng")


def test_nllb_aligned_files_named_with_no_language_are_refused_at_planning(tmp_path):
    (tmp_path / "x.english-eng.english").write_text("Hello\n", "utf-8")
    (tmp_path / "x.english-eng.eng").write_text("Hello\n", "utf-8")
    with pytest.raises(ValueError, match="'english' in its name is no language code"):
        get_reader("nllb").plan(SourceSpec.parse(f"nllb={tmp_path}/x.english-eng"), match_files)
    with pytest.raises(SystemExit, match="no language code"):
        beam_runner.main([f"--source=nllb={tmp_path}/x.english-eng", f"--output={tmp_path}/out"])
    assert not (tmp_path / "out").exists()
