"""MinHash signatures against datasketch itself, shingling, and the LSH parameters."""

import json

import numpy as np
import pytest
from datasketch import LeanMinHash, MinHash, MinHashLSH
from datasketch.lsh import _optimal_param

from mining import minhash
from mining.minhash import MinHasher, Shingling
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
