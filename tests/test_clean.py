import ftfy
import pytest
from ftfy.chardata import CHARMAP_ENCODINGS

from mining import clean
from mining.clean import CleanOptions, clean_pair, clean_text
from mining.records import new_pair
from schemas import reasons

PROSE = [
    "Der Bär läuft über die Straße, während es regnet.",
    "Le café est très chaud à Paris, n'est-ce pas ?",
    "Привет! Всё хорошо, спасибо. Ёжик в тумане.",
    "Η γλώσσα είναι ζωντανή και αλλάζει.",
    "İstanbul'da çok güzel bir gün geçirdik.",
    "Łódź jest dużym miastem w Polsce, żółw też.",
    "今日はとても良い天気ですね。",
    "我们今天去公园散步，天气非常好。",
    "मैं आज बाज़ार जा रहा हूँ।",
    "أنا أحب القراءة في المساء.",
    "오늘은 날씨가 정말 좋네요.",
    "Straße – “quoted” — ‘single’ … €5 ™",
]


def _mojibake(text: str, encoding: str) -> str | None:
    try:
        return text.encode("utf-8").decode(encoding)
    except UnicodeDecodeError:
        return None


@pytest.mark.parametrize("encoding", CHARMAP_ENCODINGS)
def test_prefilter_never_hides_what_ftfy_would_fix(encoding):
    # The fast path must give exactly what ftfy gives, on clean and broken text.
    texts = PROSE + [m for m in (_mojibake(text, encoding) for text in PROSE) if m]
    texts += [text.replace("\xa0", " ") for text in texts]
    for text in texts:
        assert clean.repair_encoding(text) == ftfy.fix_text(text, clean._FTFY_CONFIG), text


def test_mojibake_is_repaired():
    assert clean_text("FranÃ§ais, cafÃ© â€” dÃ©jÃ  vu") == "Français, café — déjà vu"
    assert clean_text("ÐŸÑ€Ð¸Ð²ÐµÑ‚ Ð¼Ð¸Ñ€") == "Привет мир"


def test_cjk_punctuation_width_is_kept():
    assert clean_text("中文，标点。（括号）ＡＢＣ") == "中文，标点。（括号）ＡＢＣ"


def test_html_remnants_become_text():
    assert clean_text("<p>Paris is <b>big</b>,</p><p>really&nbsp;big &amp; old</p>x<br/>y") == (
        "Paris is big, really big & old x y"
    )
    assert clean_text("Tom &quot;said&quot; &#233;t&#xE9;") == 'Tom "said" été'
    assert clean_text("<script>var x = 1;</script>Body") == "Body"


def test_prose_with_angle_brackets_stays():
    assert clean_text("if a < b and c > d then AT&T wins") == "if a < b and c > d then AT&T wins"


def test_invisible_characters_removed_but_joiners_kept():
    assert clean_text("zero\u200bwidth\ufeff bell\x07 soft\u00adhyphen") == "zerowidth bell softhyphen"
    assert clean_text("می\u200cخواهم") == "می\u200cخواهم"


def test_whitespace_folded_and_nfc():
    assert clean_text("  a\t\tb\n\nc\u3000d\u00a0e  ") == "a b c d e"
    assert clean_text("Cafe\u0301") == "Café"


def _pair(query, passage, negatives=()):
    return new_pair("sbert", query, passage, negatives=list(negatives))


@pytest.mark.parametrize(
    "query, passage, reason",
    [
        ("", "A passage that is long enough.", reasons.EMPTY_SIDE),
        ("A question?", " \u200b \n", reasons.EMPTY_SIDE),
        ("q" * 30, "A passage.", reasons.TOO_LONG),
        ("Same Text.", "same   text.", reasons.IDENTICAL_SIDES),
    ],
)
def test_clean_pair_drops(query, passage, reason):
    drop = clean_pair(_pair(query, passage), CleanOptions(max_query_chars=20))
    assert drop is not None and drop.reason == reason


def test_clean_pair_keeps_and_sets_stable_id():
    first = _pair(" What is  FranÃ§ais? ", "<p>A language.</p>", ["", "  other  "])
    second = _pair("What is Français?", "A language.", ["other"])
    assert clean_pair(first, CleanOptions()) is None
    assert clean_pair(second, CleanOptions()) is None
    assert first["query"] == "What is Français?" and first["negatives"] == ["other"]
    assert first["id"] == second["id"] and len(first["id"]) == 32
