"""MinHash signatures against datasketch itself, shingling, and the LSH parameters."""

import json
import random
import unicodedata

import numpy as np
import pytest
from datasketch import LeanMinHash, MinHash, MinHashLSH
from datasketch.lsh import _optimal_param

from mining import minhash
from mining.dedup import ignored_characters
from mining.minhash import MinHasher, Shingling
from mining.near_dup import NearDupOptions
from mining.shingles import NormalizedBatch
from tests.conftest import SHARED_DATA

EDGE_CASES = [
    "", "!!! ... ???", "abc", "ab cd", "  --a--b  ", "Straße", "ｆｕｌｌ　ｗｉｄｔｈ", "emoji 😀👍 test 𝐀𝐁 done",
    "Mixed 中文 and English, with ZWNJ: می\u200cخواهم", "tab\tand\nnewline\r\nend",
    "\u0301e starts with a combining accent", "a NUL\x00inside",
]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """XQuAD paragraphs and questions in seven scripts, Tatoeba sentences, and edge cases."""
    texts = []
    for code in ("en", "de", "ru", "zh", "ar", "hi"):
        data = json.loads((SHARED_DATA / "xquad" / f"xquad.{code}.json").read_text("utf-8"))
        paragraph = data["data"][0]["paragraphs"][0]
        texts += [paragraph["context"], paragraph["qas"][0]["question"]]
    for code in ("kor", "heb", "ell"):
        texts += (SHARED_DATA / "tatoeba" / f"tatoeba.{code}-eng.{code}").read_text("utf-8").splitlines()[:3]
    return texts + EDGE_CASES


def datasketch_signature(text: str, hasher: MinHasher) -> np.ndarray:
    hashfunc = {"fast": minhash.fast_hash32, "sha1": None}[hasher.hash]
    sketch = MinHash(hasher.num_perm, hasher.seed, hashfunc=hashfunc, scheme=hasher.scheme)
    sketch.update_batch([shingle.encode("utf-8") for shingle in minhash.shingles(text, hasher.shingling)])
    return sketch.hashvalues


@pytest.mark.parametrize("scheme", ["affine32", "legacy"])
@pytest.mark.parametrize("hash_name", ["sha1", "fast"])
@pytest.mark.parametrize("shingling", [Shingling("char", 5), Shingling("word", 3), Shingling("char", 1)], ids=str)
def test_signatures_equal_datasketch(texts, scheme, hash_name, shingling):
    hasher = MinHasher(num_perm=128, seed=1, scheme=scheme, hash=hash_name, shingling=shingling)
    signatures = hasher.signatures(texts)
    for text, signature in zip(texts, signatures, strict=True):
        expected = datasketch_signature(text, hasher)
        assert signature.dtype == expected.dtype and np.array_equal(signature, expected), text


# Code points that normalising treats apart: combining marks (one after a text's start, next to the text before),
# Hangul jamo that NFKC composes, ß and İ that case folding lengthens, fullwidth and ligature forms, NUL (the
# bound between texts when a batch is folded at once), separators of every kind, CJK and astral characters.
_TRICKY = "aAzZ \t\n\x00.,-_éE\u0301\u0327\u0323ßẞİıΣσςﬁﬀ①ｆＡ　\u00a0\u200b\u200c\u1100\u1161\u11a8가ก่ไ中文😀𝐀\U0002a6a5"


def _random_texts(count: int, rng: random.Random) -> list[str]:
    return ["".join(rng.choice(_TRICKY) for _ in range(rng.choice([0, 1, 2, 4, 5, 6, 9, 30]))) for _ in range(count)]


def _normalized_alone(text: str) -> str:
    """The normalising as documented, one text and one character at a time."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join("".join(" " if ignored_characters()[ord(c)] else c for c in folded).split())


@pytest.mark.parametrize("hash_name", ["sha1", "fast"])
def test_random_unicode_signatures_equal_datasketch(hash_name):
    """Whatever a batch holds, each text is normalised as alone, and its signature is datasketch's."""
    rng = random.Random(18)
    hasher = MinHasher(num_perm=32, hash=hash_name)
    for size in (1, 7, 60):
        texts = _random_texts(size, rng)
        batch = NormalizedBatch(texts)
        assert [batch.text(i) for i in range(size)] == [_normalized_alone(text) for text in texts]
        for text, signature in zip(texts, hasher.signatures(texts), strict=True):
            assert np.array_equal(signature, datasketch_signature(text, hasher)), ascii(text)


@pytest.mark.parametrize("hash_name", ["sha1", "fast"])
def test_empty_one_character_and_shorter_than_a_shingle(hash_name):
    hasher = MinHasher(hash=hash_name)
    texts = ["", "a", "ab", "abcd", "?!", " A! ", "abcde"]
    signatures = hasher.signatures(texts)
    for text, signature in zip(texts, signatures, strict=True):
        assert np.array_equal(signature, datasketch_signature(text, hasher)), text
    # Nothing left after normalising: datasketch's initial maximum; shorter than n: the whole text is the shingle.
    assert (signatures[0] == np.iinfo(np.uint32).max).all() and np.array_equal(signatures[0], signatures[4])
    assert np.array_equal(signatures[1], signatures[5]) and not np.array_equal(signatures[1], signatures[2])


def test_the_default_near_dup_signatures_are_datasketchs_with_fast_hash32(texts):
    """The pipeline's default signatures: datasketch's MinHash(num_perm, seed, hashfunc=fast_hash32) on the same
    shingles gives the same hashvalues, and MinHashLSH over either finds the same candidates."""
    options = NearDupOptions()
    hasher = options.hasher()
    rng = random.Random(5)
    # Near-copies: a few characters of each text changed, so that some are found and others missed.
    edited = ["".join(rng.choice("xyz") if rng.random() < 0.03 else c for c in text) for text in texts]
    ours = hasher.signatures(texts + edited)
    theirs = []
    for text in texts + edited:
        sketch = MinHash(options.num_perm, options.seed, hashfunc=minhash.fast_hash32)
        sketch.update_batch([shingle.encode("utf-8") for shingle in minhash.shingles(text, options.shingling)])
        theirs.append(sketch)
    assert all(np.array_equal(signature, sketch.hashvalues) for signature, sketch in zip(ours, theirs, strict=True))
    bands, rows = options.bands
    candidates = []
    leans = [LeanMinHash(seed=options.seed, hashvalues=signature, scheme="affine32") for signature in ours]
    for sketches in (leans, theirs):
        lsh = MinHashLSH(num_perm=options.num_perm, params=(bands, rows))
        for index, sketch in enumerate(sketches[: len(texts)]):
            lsh.insert(index, sketch)
        candidates.append([sorted(lsh.query(sketch)) for sketch in sketches[len(texts) :]])
    assert candidates[0] == candidates[1]
    found = sum(index in found for index, found in enumerate(candidates[0]))
    assert 0 < found < len(texts)


def test_the_defaults_are_datasketchs_defaults(texts):
    """MinHash(num_perm, seed) with nothing else: sha1_hash32 and datasketch's default scheme."""
    signatures = MinHasher(num_perm=64, seed=42).signatures(texts)
    for text, signature in zip(texts, signatures, strict=True):
        sketch = MinHash(64, 42)
        sketch.update_batch([shingle.encode("utf-8") for shingle in minhash.shingles(text)])
        assert np.array_equal(sketch.hashvalues, signature), text


def test_a_signature_does_not_depend_on_its_batch(texts):
    hasher = MinHasher(hash="sha1")
    together = hasher.signatures(texts)
    alone = np.vstack([hasher.signatures([text]) for text in texts])
    assert np.array_equal(together, alone)
    assert hasher.signatures([]).shape == (0, 128)


def test_signatures_go_into_datasketch_lsh(texts):
    hasher = MinHasher()
    near_copy = texts[0].replace("308", "310").replace("sixth", "seventh")
    signatures = hasher.signatures(texts[:6] + [near_copy])
    lsh = MinHashLSH(threshold=0.8, num_perm=128)
    for index, signature in enumerate(signatures[:6]):
        lsh.insert(index, LeanMinHash(seed=1, hashvalues=signature, scheme="affine32"))
    assert lsh.query(LeanMinHash(seed=1, hashvalues=signatures[6], scheme="affine32")) == [0]


def test_normalising_folds_case_punctuation_spacing_and_width():
    texts = ["  Hello,   WORLD!! ", "ｆｕｌｌ　ｗｉｄｔｈ", "", "...", "a\u200bb", "Stra\u00dfe--Ecke", "Cafe\u0301"]
    expected = ["hello world", "full width", "", "", "a b", "strasse ecke", "café"]
    for batch in (NormalizedBatch(texts), NormalizedBatch([*texts, "x\x00y"])):
        assert [batch.text(i) for i in range(len(texts))] == expected


def test_shingles():
    assert minhash.shingles("Ab, cd!") == ["ab cd"]
    assert minhash.shingles("abcdef") == ["abcde", "bcdef"]
    assert minhash.shingles("a b c d", Shingling("char", 3)) == ["a b", " b ", "b c", " c ", "c d"]
    assert minhash.shingles("One two, three. Four", Shingling("word", 2)) == ["one two", "two three", "three four"]
    assert minhash.shingles("one", Shingling("word", 3)) == ["one"]
    assert minhash.shingles("?!") == []
    with pytest.raises(ValueError):
        Shingling("byte", 5)


@pytest.mark.parametrize("num_perm", [16, 64, 100, 128, 256])
def test_bands_and_rows_are_datasketchs(num_perm):
    for threshold in np.arange(0.5, 0.96, 0.05):
        assert minhash.optimal_bands(float(threshold), num_perm) == _optimal_param(threshold, num_perm, 0.5, 0.5)
    assert minhash.optimal_bands(0.8, 128) == (9, 13)
