import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import tatoeba_language_keep
from mining import languages
from mining.langid import (
    UNVERIFIED, FastTextIdentifier, LidOptions, bundled_model_path, identify_batch, model_label_set, model_labels,
)
from mining.records import new_pair
from schemas import reasons

GERMAN = "Die Stadt liegt am Ufer eines großen Flusses und hat einen alten Hafen."
ENGLISH = "The city lies on the bank of a large river and has an old harbour."
FRENCH = "La ville se trouve au bord d'un grand fleuve et possède un vieux port."
JAPANESE = "その町は大きな川のほとりにあり、古い港があります。"


def _run(identifier, *records, options=LidOptions()):
    return identify_batch(list(records), identifier, options)


def test_monolingual_pair_gets_its_language(identifier):
    kept, drops = _run(identifier, new_pair("ccnews", "Wo liegt die Stadt am großen Fluss?", GERMAN))
    assert not drops
    (record,) = kept
    assert record["query_lang"] == record["passage_lang"] == "de"
    assert record["passage_lang_score"] > 0.9 and record["query_lang_score"] > 0.5


def test_short_side_is_never_the_reason_to_drop(identifier):
    kept, drops = _run(identifier, new_pair("ccnews", "Hafen", GERMAN), new_pair("ccnews", "Kiel", "Hamburg"))
    assert not drops
    assert kept[0]["query_lang"] == "de" and kept[0]["query_lang_score"] is None
    assert kept[1]["passage_lang_score"] is None
    kept, drops = _run(identifier, new_pair("ccnews", "Kiel", "Hamburg", query_lang="de", passage_lang="de"))
    assert not drops and (kept[0]["query_lang"], kept[0]["query_lang_score"]) == ("de", None)


def test_sides_in_two_languages_are_dropped(identifier):
    kept, drops = _run(identifier, new_pair("sbert", "Where does the city lie, on which river?", GERMAN))
    assert not kept
    assert drops[0].reason == reasons.PAIR_MISMATCH


def test_declared_language_contradicted(identifier):
    kept, drops = _run(identifier, new_pair("ccnews", "Titel", GERMAN, query_lang="fr", passage_lang="fr"))
    assert not kept and drops[0].reason == reasons.DECLARED_MISMATCH
    kept, drops = _run(identifier, new_pair("ccnews", "Titel", GERMAN, query_lang="de", passage_lang="de"))
    assert kept and not drops


def test_unidentifiable_text_is_low_confidence(identifier):
    kept, drops = _run(identifier, new_pair("sbert", "q", "1234 5678 9012 3456 7890 !!! ??? ... 42 42"))
    assert not kept and drops[0].reason == reasons.LOW_CONFIDENCE


def test_translation_pairs_keep_both_languages(identifier):
    kept, drops = _run(
        identifier,
        new_pair("nllb", FRENCH, ENGLISH, query_lang="fr", passage_lang="en", bilingual=True),
        new_pair("nllb", JAPANESE, ENGLISH, query_lang="ja", passage_lang="en", bilingual=True),
        new_pair("nllb", "Oui.", "Yes.", query_lang="fr", passage_lang="en", bilingual=True),
        new_pair("nllb", GERMAN, ENGLISH, query_lang="es", passage_lang="en", bilingual=True),
    )
    assert [(r["query_lang"], r["passage_lang"]) for r in kept] == [("fr", "en"), ("ja", "en"), ("fr", "en")]
    assert kept[2]["query_lang_score"] is None
    assert [drop.reason for drop in drops] == [reasons.DECLARED_MISMATCH]


def test_min_bytes_counts_utf8_bytes(identifier):
    # Nine CJK characters are 27 bytes: identified on their own.
    kept, _ = _run(identifier, new_pair("sbert", "大きな川のほとり", JAPANESE))
    assert kept[0]["query_lang_score"] is not None


def _translation(text, lang, english="It is a sentence.", passage_lang="en"):
    return new_pair("nllb", text, english, query_lang=lang, passage_lang=passage_lang, bilingual=True)


def test_a_language_the_model_has_no_label_for_is_kept_unverified(identifier):
    # Kabyle and Faroese: lid.176 has no label for either (it says it, es or is for them).
    kept, drops = _run(
        identifier,
        _translation("Ur yeshil ara ad d-tessufɣeḍ lxiḍ deg tissegnit.", "kab", "It is not easy to thread a needle."),
        _translation("Eg havi ongantíð sæð nakað líknandi.", "fo", "I have never seen anything like it."),
    )
    assert not drops
    assert [record["query_lang"] for record in kept] == ["kab", "fo"]
    assert all(record[UNVERIFIED] == ["query"] and record["query_lang_score"] is None for record in kept)
    # Still contradicted by a confident English copy of the other side.
    kept, drops = _run(identifier, _translation("I have never seen anything like this before.", "fo"))
    assert not kept and drops[0].reason == reasons.DECLARED_MISMATCH


def test_short_sides_are_checked_by_script_and_a_confident_model(identifier):
    kept, drops = _run(
        identifier,
        _translation("Nie chcę cię.", "uk", "I don't want you."),  # Latin script, at any length
        _translation("Go back to bed now.", "es", "Vuelve a la cama."),  # 19 bytes, en 0.9
        _translation("Ми це розуміємо.", "uk", "We understand it."),
        _translation("Vuelve a la cama ya.", "es", "Go back to bed now."),
        _translation("Kiel", "de", "Kiel"),  # under half --lid-min-bytes: the script alone
    )
    assert [record["query"] for record in kept] == ["Ми це розуміємо.", "Vuelve a la cama ya.", "Kiel"]
    assert [drop.reason for drop in drops] == [reasons.DECLARED_MISMATCH] * 2
    assert drops[0].detail == "query is Latn script, declared uk"
    assert drops[1].detail.startswith("query is en (")


def test_close_languages_agree_and_clearly_other_ones_do_not(identifier):
    bosnian = "Ne znam šta da radim sa svojim životom, a niko mi ne može pomoći."
    kept, drops = _run(
        identifier,
        _translation(bosnian, "bs"), _translation(bosnian, "hr"), _translation(bosnian, "sr"),
        _translation("Ela non sabe o que quere, iso é o que importa.", "gl"),  # pt 0.97 to lid.176
        _translation("Мы были там вчера вечером.", "uk"),  # ы: not Ukrainian
        _translation(FRENCH, "de"),
    )
    assert [record["query_lang"] for record in kept] == ["bs", "hr", "sr", "gl"]
    assert [drop.detail.split(" (")[0] for drop in drops] == [
        "query is written with letters uk does not use, declared uk", "query is fr"
    ]


def test_tatoeba_keep_and_catch_rates(identifier, tatoeba_dir):
    """A cheaper run of benchmarks/tatoeba_language_keep.py: low-resource and close languages kept, planted
    wrong declarations caught (the benchmark's figures over every language are in the README)."""
    pairs = tatoeba_language_keep.tatoeba_pairs(
        tatoeba_dir, ["kab", "fao", "lfn", "arq", "uzb", "bos", "hrv", "glg", "dsb", "swh", "fra", "rus", "ukr"]
    )
    options = LidOptions()
    rates = {code: rate for code, (rate, _) in tatoeba_language_keep.keep_rates(pairs, identifier, options).items()}
    assert min(rates.values()) >= 0.9 and sum(rates.values()) / len(rates) >= 0.97, rates
    caught = tatoeba_language_keep.planted_catch_rates(pairs, identifier, options)
    assert caught["fra declared de"] >= 0.95 and caught["eng declared es"] >= 0.95, caught
    assert caught["rus declared uk"] >= 0.95 and caught["fra+eng undeclared, both long"] >= 0.95, caught


def test_a_model_file_lists_its_labels(tmp_path):
    with open(bundled_model_path(), "rb") as stream:
        labels = model_labels(stream)
    assert len(labels) == 176 and labels[0] == "__label__en"
    (tmp_path / "not-a-model.bin").write_bytes(b"\x00" * 200)
    with open(tmp_path / "not-a-model.bin", "rb") as stream, pytest.raises(ValueError, match="not a fastText model"):
        model_labels(stream)


# A GlotLID-style model: labels with their script, Uzbek in two.
_TRAINING = {"fra": "fra_Latn", "rus": "rus_Cyrl", "ukr": "ukr_Cyrl", "bos": "bos_Latn", "hrv": "hrv_Latn"}


# fastText bindings that train, installed apart from fasttext-predict (which owns the ``fasttext`` module and
# cannot train): ``.ci/run`` puts fasttext-numpy2 there with ``pip install --target``.
TRAINING_BINDINGS = os.environ.get("EMBEDMILL_FASTTEXT_TRAINING", "")
_TRAIN = """
import sys, fasttext
model = fasttext.train_supervised(sys.argv[1], dim=16, epoch=20, lr=0.5, minn=2, maxn=4, bucket=20000, thread=1,
                                  seed=1, verbose=0)
model.save_model(sys.argv[2])
"""


@pytest.fixture(scope="module")
def scripted_model(tatoeba_dir, tmp_path_factory) -> str:
    """A small real fastText model trained on Tatoeba sentences labelled like GlotLID's (a few seconds)."""
    if not Path(TRAINING_BINDINGS, "fasttext").is_dir():
        pytest.skip("needs fastText bindings that train, installed apart: EMBEDMILL_FASTTEXT_TRAINING (see .ci/run)")
    lines = []
    for code, label in _TRAINING.items():
        lines += [f"__label__{label} {s}" for s in (tatoeba_dir / f"tatoeba.{code}-eng.{code}").read_text().splitlines()[:400]]
    lines += [f"__label__eng_Latn {s}" for s in (tatoeba_dir / "tatoeba.fra-eng.eng").read_text().splitlines()[:400]]
    for sentence in (tatoeba_dir / "tatoeba.uzb-eng.uzb").read_text().splitlines():
        script = "Cyrl" if languages.letter_scripts(sentence)["Cyrl"] else "Latn"
        lines.append(f"__label__uzn_{script} {sentence}")
    training = tmp_path_factory.mktemp("scripted_model") / "train.txt"
    training.write_text("\n".join(sorted(lines)) + "\n", "utf-8")
    path = training.with_name("scripted.bin")
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([TRAINING_BINDINGS, os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", _TRAIN, str(training), str(path)], check=True, env=environment)
    return str(path)


def test_a_model_with_scripted_labels(scripted_model):
    identifier = FastTextIdentifier(scripted_model)
    assert identifier.labels == ["bs", "en", "fr", "hr", "ru", "uk", "uz_Cyrl", "uz_Latn"]
    with open(scripted_model, "rb") as stream:
        assert model_label_set(stream) == identifier.labels
    assert identifier.knows("uz", "Cyrl") and identifier.knows("bs", "Latn")
    # No Serbian label: a Serbian side may agree through bs and hr, but is not verified by them.
    assert not identifier.knows("sr", "Latn") and not identifier.knows("kk", "Cyrl")
    kept, drops = _run(
        identifier,
        _translation("Менинг бир ўғлим ва бир қизим бор.", "uz", "I have a son and a daughter."),
        _translation("Bu maqolani qisqartirish shart emas.", "uz", "This article does not need shortening."),
        _translation("Ur yeshil ara ad d-tessufɣeḍ lxiḍ deg tissegnit.", "kab", "It is not easy to thread a needle."),
        _translation(FRENCH, "ru"),
    )
    assert [record["query_lang"] for record in kept] == ["uz", "uz", "kab"]
    assert kept[0]["query_lang_score"] > 0.5 and UNVERIFIED not in kept[0]
    assert kept[2][UNVERIFIED] == ["query"]
    assert [drop.reason for drop in drops] == [reasons.DECLARED_MISMATCH]
