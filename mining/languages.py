"""Language codes in one convention: the labels of fastText's lid.176 model.

That is ISO 639-1 where a language has a two-letter code, otherwise ISO 639-3;
individual languages that lid.176 labels by their macrolanguage are folded
into it (``cmn`` -> ``zh``, ``arb`` -> ``ar``, ``nb`` -> ``no``). Region and
script subtags (``pt_BR``, ``zh-Hans``, ``deu_Latn``) are dropped.
"""

import functools
import re

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
