"""How many Tatoeba pairs language ID keeps per language, and how many wrongly declared ones it catches.

    python benchmarks/tatoeba_language_keep.py [--data ../shared/data/tatoeba] [--languages fra kab]
        [--lid-model PATH] [--threshold 0.5] [--short-threshold 0.8] [--contradiction-ratio 20]

Every ``tatoeba.xxx-eng`` pair is cleaned and identified as the ``nllb`` reader declares it (xxx for
the sentence, en for its translation), in batches, without Beam: the keep rate per language, with
its drop reasons, then the mean, median and minimum. Then planted mismatches, which should be
dropped as ``lang_declared_mismatch``: French sentences declared German, Russian ones declared
Ukrainian, English ones (the English side of every language's first 100 pairs) declared Spanish;
and monolingual pairs of a French sentence and an English one, which should be dropped as
``lang_pair_mismatch`` when both sides are identifiable.
"""

import argparse
import statistics
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mining import languages, langid  # noqa: E402
from mining.clean import CleanOptions, clean_pair  # noqa: E402
from mining.records import new_pair  # noqa: E402
from schemas import reasons  # noqa: E402

PLANTED = (("fra", "de"), ("rus", "uk"))
ENGLISH_DECLARED_SPANISH_PER_LANGUAGE = 100


def tatoeba_pairs(data: Path, codes: list[str] | None = None) -> dict[str, tuple[list[str], list[str]]]:
    """Per Tatoeba code (``fra``), its sentences and their English translations."""
    pairs = {}
    for path in sorted(data.glob("tatoeba.*-eng.eng")):
        code = path.name.split(".")[1].split("-")[0]
        if codes is None or code in codes:
            sentences = (data / f"tatoeba.{code}-eng.{code}").read_text("utf-8").splitlines()
            pairs[code] = (sentences, path.read_text("utf-8").splitlines())
    return pairs


def _identified(records, identifier, options):
    cleaned = [record for record in records if clean_pair(record, CleanOptions()) is None]
    kept, drops = langid.identify_batch(cleaned, identifier, options)
    return len(cleaned), kept, drops


def keep_rates(pairs, identifier, options) -> dict[str, tuple[float, Counter]]:
    """Per code: the share of its (cleaned) pairs kept, and the drops by reason."""
    rates = {}
    for code, (sentences, english) in pairs.items():
        lang = languages.normalize(code)
        records = [
            new_pair("nllb", sentence, translation, query_lang=lang, passage_lang="en", bilingual=True)
            for sentence, translation in zip(sentences, english, strict=True)
        ]
        total, kept, drops = _identified(records, identifier, options)
        rates[code] = (len(kept) / total, Counter(drop.reason for drop in drops))
    return rates


def planted_catch_rates(pairs, identifier, options) -> dict[str, float]:
    """Per planted kind: the share dropped for the reason it should be."""
    planted = {}
    for code, wrong in PLANTED:
        sentences, english = pairs[code]
        planted[f"{code} declared {wrong}"] = [
            new_pair("nllb", s, e, query_lang=wrong, passage_lang="en", bilingual=True)
            for s, e in zip(sentences, english, strict=True)
        ]
    planted["eng declared es"] = [
        new_pair("nllb", e, s, query_lang="es", passage_lang=languages.normalize(code), bilingual=True)
        for code, (sentences, english) in pairs.items()
        for s, e in list(zip(sentences, english, strict=True))[:ENGLISH_DECLARED_SPANISH_PER_LANGUAGE]
    ]
    rates = {}
    for name, records in planted.items():
        total, _, drops = _identified(records, identifier, options)
        rates[name] = sum(drop.reason == reasons.DECLARED_MISMATCH for drop in drops) / total
    sentences, english = pairs["fra"]
    monolingual = [new_pair("sbert", e, s) for s, e in zip(sentences, english, strict=True)]
    long_enough = [r for r in monolingual if min(len(r["query"].encode()), len(r["passage"].encode())) >= options.min_bytes]
    total, _, drops = _identified(long_enough, identifier, options)
    rates["fra+eng undeclared, both long"] = sum(drop.reason == reasons.PAIR_MISMATCH for drop in drops) / total
    return rates


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "tatoeba")
    parser.add_argument("--languages", nargs="*", default=None, help="Tatoeba codes; default every one there")
    parser.add_argument("--lid-model", default=None)
    parser.add_argument("--threshold", type=float, default=langid.LidOptions.threshold)
    parser.add_argument("--short-threshold", type=float, default=langid.LidOptions.short_threshold)
    parser.add_argument("--contradiction-ratio", type=float, default=langid.LidOptions.contradiction_ratio)
    args = parser.parse_args(argv)
    options = replace(
        langid.LidOptions(), threshold=args.threshold, short_threshold=args.short_threshold,
        contradiction_ratio=args.contradiction_ratio,
    )
    identifier = langid.FastTextIdentifier(args.lid_model)
    pairs = tatoeba_pairs(args.data, args.languages)
    rates = keep_rates(pairs, identifier, options)
    for code, (rate, dropped) in sorted(rates.items(), key=lambda item: item[1][0]):
        print(f"{code:5} {rate:.3f}  " + ", ".join(f"{reason} {n}" for reason, n in dropped.most_common()))
    keeps = [rate for rate, _ in rates.values()]
    worst = min(rates, key=lambda code: rates[code][0])
    print(f"\n{len(keeps)} languages: mean keep {statistics.mean(keeps):.4f}, median {statistics.median(keeps):.4f}, "
          f"min {rates[worst][0]:.4f} ({worst}), below 0.90: {sum(rate < 0.9 for rate in keeps)}")
    planted_pairs = tatoeba_pairs(args.data) if args.languages else pairs
    for name, rate in planted_catch_rates(planted_pairs, identifier, options).items():
        print(f"caught: {name}: {rate:.4f}")


if __name__ == "__main__":
    main()
