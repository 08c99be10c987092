from mining.langid import LidOptions, identify_batch
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
