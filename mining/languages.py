"""Language codes in one convention: the labels of fastText's lid.176 model.

That is ISO 639-1 where a language has a two-letter code, otherwise ISO 639-3;
individual languages that lid.176 labels by their macrolanguage are folded
into it (``cmn`` -> ``zh``, ``arb`` -> ``ar``, ``nb`` -> ``no``). Region and
script subtags (``pt_BR``, ``zh-Hans``, ``deu_Latn``) are dropped from declared codes; a language-ID
model's labels keep their script where the model tells scripts of one language apart (``uz_Latn``,
``uz_Cyrl``).

Also here, what language ID judges agreement by: the languages a model confuses (``CLOSE``) and the
scripts each language is written in (``SCRIPTS``).
"""

import functools
import re
import unicodedata
from collections import Counter

import pycountry

UNDETERMINED = "und"

# Individual language -> the label lid.176 uses for it.
_FOLD_TO_LID_LABEL = {
    "cmn": "zh", "arb": "ar", "pes": "fa", "prs": "fa", "zsm": "ms", "lvs": "lv",
    "ekk": "et", "swh": "sw", "nb": "no", "khk": "mn", "uzn": "uz", "azj": "az",
    "plt": "mg", "ydd": "yi", "gug": "gn", "quy": "qu", "npi": "ne", "ory": "or",
    "pbt": "ps",
    # lid.176 labels Alemannic "als" (ISO 639-3 "als" is Tosk Albanian).
    "gsw": "als",
}

_SUBTAG = re.compile(r"[-_]")
_CODE = re.compile(r"^[a-z]{2,3}$")


def is_known(code: str) -> bool:
    """Whether ISO 639 has this two- or three-letter code."""
    code = code.lower()
    field = "alpha_2" if len(code) == 2 else "alpha_3"
    return pycountry.languages.get(**{field: code}) is not None


@functools.cache
def normalize(code: str) -> str:
    """The convention's code for ``code``; ValueError when it is no language code."""
    primary = _SUBTAG.split(code.strip().lower(), 1)[0]
    if not _CODE.match(primary):
        raise ValueError(f"not a language code: {code!r}")
    if primary == UNDETERMINED:
        return primary
    language = (
        pycountry.languages.get(alpha_2=primary)
        if len(primary) == 2
        else pycountry.languages.get(alpha_3=primary) or pycountry.languages.get(bibliographic=primary)
    )
    if language is not None:
        primary = getattr(language, "alpha_2", None) or language.alpha_3
    return _FOLD_TO_LID_LABEL.get(primary, primary)


# ISO 15924 scripts each language is written in, its usual writing first, "+" joining scripts one writing
# uses together: a side with hardly a letter in any of them is not in the declared language, however
# short. A language not listed is not checked. A model label without a script (lid.176's) stands for the
# language in its first writing here.
_SCRIPTS_OF_LANGUAGES = {
    "Latn": (
        "af als an ang ast bar bcl br ca cbk ceb ch co cs csb cy da de dsb dtp en eo es et eu fi fil fo fr frr fy "
        "ga gd gl gn gsw gv hr hsb ht hu ia id ie ilo io is it jv kab kl kzj la lb lfn li lij lmo lt lv max mg "
        "min mt mwl nap nds nl nn no nov oc pam pap pl pms pt qu rm ro sc scn sco sk sl sm so sq su sv sw swg tl "
        "tr tzl vec vi vls vo wa war wo xh yo zu"
    ),
    "Cyrl": "av ba be bg bxr ce cv kv ky mhr mk mn myv os ru rue sah tg tt tyv udm uk",
    "Cyrl Latn": "kk sr",
    "Latn Cyrl": "az bs lfn sh tk uz",
    "Arab": "ar arz azb ckb fa lrc mzn pnb ps sd ug ur",
    "Arab Latn": "arq ary ku ms",
    "Hani": "lzh wuu yue zh",
    "Hani+Hira+Kana": "ja",
    "Hang+Hani": "ko",
    "Deva": "awa bh bho dty gom hi mai mr ne new sa",
    "Beng": "as bn bpy",
    "Grek": "el",
    "Hebr": "he yi",
    "Geor": "ka xmf",
    "Armn": "hy",
    "Ethi": "am ti",
    "Thai": "th",
    "Laoo": "lo",
    "Khmr": "km",
    "Mymr": "my",
    "Tibt": "bo",
    "Thaa": "dv",
    "Sinh": "si",
    "Taml": "ta",
    "Telu": "te",
    "Knda": "kn",
    "Mlym": "ml",
    "Gujr": "gu",
    "Guru Arab": "pa",
    "Orya": "or",
}
# Per language, the ways it is written, each a set of scripts used together (Japanese: Han and kana).
SCRIPTS: dict[str, tuple[frozenset[str], ...]] = {
    lang: tuple(frozenset(writing.split("+")) for writing in scripts.split())
    for scripts, langs in _SCRIPTS_OF_LANGUAGES.items()
    for lang in langs.split()
}
# ISO 15924 codes that name several scripts used together, as GlotLID's labels do (jpn_Jpan, kor_Kore).
_SCRIPT_PARTS = {
    "Jpan": frozenset({"Hani", "Hira", "Kana"}), "Kore": frozenset({"Hang", "Hani"}),
    "Hans": frozenset({"Hani"}), "Hant": frozenset({"Hani"}),
}


def label_scripts(lang: str, script: str | None) -> frozenset[str] | None:
    """The scripts a model's label for ``lang`` covers: those its script code names; for a label without one
    (lid.176's), the language's usual writing; None (any) where SCRIPTS does not list the language."""
    if script:
        return _SCRIPT_PARTS.get(script, frozenset((script,)))
    writings = SCRIPTS.get(lang)
    return writings[0] if writings else None


# Letters of a language's script that its orthography never uses: a Russian sentence is Cyrillic like a
# Ukrainian one, but its ы, э, ъ or ё tell it is not Ukrainian, however short.
FOREIGN_LETTERS = {
    "uk": frozenset("ыэъё"),
    "ru": frozenset("іїєґў"),
    "be": frozenset("щъиїєґ"),
    "pl": frozenset("ěřčšžŕďťňůý"),
    "en": frozenset("þðƿȝæāēīōūȳġċ"),
}
# Unicode character names begin with their script's name (LATIN SMALL LETTER A, CJK UNIFIED IDEOGRAPH-4E00).
_SCRIPT_OF_NAME = {
    "LATIN": "Latn", "CYRILLIC": "Cyrl", "GREEK": "Grek", "ARABIC": "Arab", "HEBREW": "Hebr", "CJK": "Hani",
    "HIRAGANA": "Hira", "KATAKANA": "Kana", "HANGUL": "Hang", "DEVANAGARI": "Deva", "BENGALI": "Beng",
    "GEORGIAN": "Geor", "ARMENIAN": "Armn", "ETHIOPIC": "Ethi", "THAI": "Thai", "LAO": "Laoo", "KHMER": "Khmr",
    "MYANMAR": "Mymr", "TIBETAN": "Tibt", "THAANA": "Thaa", "SINHALA": "Sinh", "TAMIL": "Taml", "TELUGU": "Telu",
    "KANNADA": "Knda", "MALAYALAM": "Mlym", "GUJARATI": "Gujr", "GURMUKHI": "Guru", "ORIYA": "Orya",
    "MONGOLIAN": "Mong", "TIFINAGH": "Tfng",
}
# Enough letters to tell a text's script: a long passage is not read to its end for it.
_SCRIPT_SAMPLE_CHARS = 300

# Languages fastText LID models confuse with each other, so that one said for another is no contradiction:
# macrolanguages and their members, a language and its historical stage or close dialects, languages of one
# continuum the models do not separate on Tatoeba's short sentences. Each set is one group, of codes as
# normalize() gives them (individual languages it folds, like zsm or khk, are not repeated here).
_CLOSE_GROUPS = (
    "bs hr sr sh cnr",  # Serbo-Croatian: one label (sh) or four for one language
    "no nn da",  # Norwegian (Bokmal folded into no) and Danish share most of their written words
    "ms id min",  # Malay, Indonesian and Minangkabau
    "ku ckb kmr sdh",  # Kurdish and its members
    "hsb dsb",  # Upper and Lower Sorbian
    "zh yue wuu lzh gan hak nan",  # Chinese: Han-script varieties
    "ar arz arq ary apc ajp acm aeb",  # Arabic and its vernaculars
    "fa tg",  # Persian (Dari folded into fa) and Tajik, its Cyrillic-script form
    "de als bar pfl swg ksh",  # German and its dialects (Swiss German folded into als)
    "es ast an ext cbk",  # Spanish, its Iberian neighbours and Chavacano, a Spanish creole
    "pt gl",  # Galician is written like Portuguese
    "it pms lmo vec nap scn eml lij",  # Italian and the languages of Italy
    "tr az tk uz gag crh",  # Oghuz and Karluk Turkic in Latin script: lid.176 says tr for all of them
    "tl fil",  # Filipino is standardised Tagalog
    "en ang sco",  # Old English and Scots read as English
    "ru orv rue",  # Old East Slavic and Rusyn read as Russian
    "eo io",  # Ido is reformed Esperanto
)
CLOSE: dict[str, frozenset[str]] = {
    lang: frozenset(group.split()) for group in _CLOSE_GROUPS for lang in group.split()
}


def close_to(lang: str) -> frozenset[str]:
    """``lang`` and the languages models confuse it with (the base codes, without script)."""
    return CLOSE.get(lang, frozenset((lang,)))


def base(label: str) -> str:
    """A label's language without its script: ``uz_Cyrl`` -> ``uz``."""
    return label.split("_", 1)[0]


def letter_scripts(text: str) -> Counter:
    """Letters per script among the first characters of ``text`` (letters of unlisted scripts not counted)."""
    sample = text[:_SCRIPT_SAMPLE_CHARS]
    if sample.isascii():
        # Most texts of a mining run (every English side): ASCII letters are Latin, no name lookups needed.
        letters = sum(char.isalpha() for char in sample)
        return Counter({"Latn": letters} if letters else {})
    counts = Counter(_script_of(char) for char in sample if char.isalpha())
    counts.pop(None, None)
    return counts


@functools.cache
def _script_of(char: str) -> str | None:
    return _SCRIPT_OF_NAME.get(unicodedata.name(char, "").split(" ", 1)[0])


def foreign_letter_share(text: str, lang: str) -> float:
    """The share of the first letters of ``text`` that ``lang`` never writes (``FOREIGN_LETTERS``)."""
    foreign = FOREIGN_LETTERS.get(lang)
    # None of the listed letters is ASCII.
    if not foreign or text.isascii():
        return 0.0
    letters = [char for char in text[:_SCRIPT_SAMPLE_CHARS].lower() if char.isalpha()]
    return sum(char in foreign for char in letters) / len(letters) if letters else 0.0


def model_label(raw: str, scripts_in_model: dict[str, set]) -> str:
    """A model's label (``bos_Latn``, ``uzn_Cyrl``, ``de``) in this convention: the language normalised, and its
    script kept where the model has labels for that language in more than one script."""
    lang, script = _split_label(raw)
    if script and len(scripts_in_model.get(lang, ())) > 1:
        return f"{lang}_{script}"
    return lang


def model_scripts(raw_labels) -> dict[str, set]:
    """Per normalised language of a model's labels, the scripts they name (None for a label without one)."""
    scripts: dict[str, set] = {}
    for raw in raw_labels:
        lang, script = _split_label(raw)
        scripts.setdefault(lang, set()).add(script)
    return scripts


def _split_label(raw: str) -> tuple[str, str | None]:
    code, _, script = raw.partition("_")
    try:
        lang = normalize(code)
    except ValueError:
        # Not a language (GlotLID's zxx_Zxxx-like labels keep their code): it agrees with no declared one.
        lang = code.lower()
    return lang, (script.title() if len(script) == 4 and script.isalpha() else None)
