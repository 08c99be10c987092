"""The funnel: how many records each source fed in, and where each one ended."""

import datetime
import hashlib
from collections import Counter

import pyarrow as pa

from mining.languages import UNDETERMINED
from mining.records import DeadLetter, Drop
from schemas import manifest as m
from schemas import pairs as f
from schemas import removed as r
from schemas.pairs import schema_description

INPUT = "input"
DEAD_LETTER = "dead_letter"
UNVERIFIED = "unverified"
_DROPPED = "dropped:"


def declared_language(record: dict) -> str | None:
    """What a mined record is counted under per language: its declared language (a translation pair's
    non-English side, the query, by the readers' convention), ``und`` for none; None for a record of a finished
    run, which no longer carries what was declared."""
    if f.DECLARED_QUERY_LANG not in record:
        return None
    return record[f.DECLARED_QUERY_LANG] or record[f.DECLARED_PASSAGE_LANG] or UNDETERMINED


def reached_languages(record: dict) -> set[str]:
    """The languages a record reaching language ID is counted under, each once: those language ID gave it
    (``query_lang``, ``passage_lang``), or for one it dropped, those declared for its sides (a monolingual
    pair's passage language judges both), ``und`` for none."""
    if f.QUERY_LANG in record:
        return {record[f.QUERY_LANG], record[f.PASSAGE_LANG]}
    declared = {record[f.DECLARED_PASSAGE_LANG]}
    if record[f.BILINGUAL]:
        declared.add(record[f.DECLARED_QUERY_LANG])
    return (declared - {None, ""}) or {UNDETERMINED}


_UNSCORED = "unscored"


class FunnelReport:
    """Counts per (source, event) and a bounded, deterministic sample of drops.

    Reports from any split of the work merge into the same result: the sample
    keeps the ``sample_size`` smallest ids per reason.
    """

    def __init__(self, sample_size: int):
        self.sample_size = sample_size
        self.counts: Counter[tuple[str, str]] = Counter()
        self.samples: dict[str, list[dict]] = {}
        # Consistency-filtered runs: pairs per (source, query language, rank bin).
        self.ranks: Counter[tuple[str, str, str]] = Counter()
        # Instruction runs: digests of the distinct instructions among the output rows, per source.
        self.instructions: dict[str, set[bytes]] = {}
        # Hard-negative runs: candidates (not records) skipped per (source, reason).
        self.skipped: Counter[tuple[str, str]] = Counter()
        # Mining runs: per (source, declared language, event) records in, dropped per reason, kept unverified.
        self.languages: Counter[tuple[str, str, str]] = Counter()
        # Mining runs: rows reaching language ID per (source, language), and the kept sides' scores per
        # (source, side, score bin or "unscored").
        self.language_input: Counter[tuple[str, str]] = Counter()
        self.lid_scores: Counter[tuple[str, str, int | str]] = Counter()

    def __bool__(self) -> bool:
        return bool(self.counts or self.ranks or self.instructions or self.skipped or self.languages
                    or self.language_input)

    def count_language_id(self, kept: list[dict], dropped: list[dict]) -> None:
        """The records language ID kept and dropped: under each of their languages, and the kept sides' scores."""
        for record in (*kept, *dropped):
            for lang in reached_languages(record):
                self.language_input[record[f.SOURCE], lang] += 1
        for record in kept:
            for side, score in ((f.QUERY, record[f.QUERY_LANG_SCORE]), (f.PASSAGE, record[f.PASSAGE_LANG_SCORE])):
                self.lid_scores[record[f.SOURCE], side, _UNSCORED if score is None else m.lid_score_bin(score)] += 1

    def language_input_for(self, source: str) -> dict[str, int]:
        return dict(sorted((lang, n) for (counted, lang), n in self.language_input.items() if counted == source))

    def lid_scores_for(self, source: str) -> m.LidScores | None:
        """The source's kept pairs' scores; None for a source that never reached language ID."""
        if not any(counted == source for counted, _ in self.language_input):
            return None
        scores = m.LidScores()
        for (counted, side, score_bin), n in self.lid_scores.items():
            if counted == source:
                histogram = getattr(scores, side)
                if score_bin == _UNSCORED:
                    histogram.unscored += n
                else:
                    histogram.bins[score_bin] += n
        return scores

    def count_language_input(self, record: dict) -> None:
        """A mined record in, under its declared language (``count_input`` counts it under its source)."""
        self.languages[record[f.SOURCE], declared_language(record), INPUT] += 1

    def count_unverified(self, record: dict) -> None:
        """A pair language ID kept with a side whose declared language the model could not verify."""
        self.languages[record[f.SOURCE], declared_language(record), UNVERIFIED] += 1

    def language_totals(self, source: str) -> dict[str, dict]:
        """Per declared language of a mining run's source: input, output, dropped per reason, unverified."""
        totals: dict[str, dict] = {}
        for (counted_source, lang, event), n in sorted(self.languages.items()):
            if counted_source != source:
                continue
            entry = totals.setdefault(lang, {INPUT: 0, "output": 0, "dropped": {}, UNVERIFIED: 0})
            if event.startswith(_DROPPED):
                entry["dropped"][event[len(_DROPPED) :]] = n
            else:
                entry[event] += n
        for entry in totals.values():
            entry["output"] = entry[INPUT] - sum(entry["dropped"].values())
        return totals

    def count_skipped(self, source: str, reason: str, n: int = 1) -> None:
        self.skipped[source, reason] += n

    def skipped_for(self, source: str) -> dict[str, int]:
        """Candidates skipped per reason, for one source."""
        counts = {reason: n for (counted_source, reason), n in self.skipped.items() if counted_source == source}
        return dict(sorted(counts.items()))

    def add_instruction(self, source: str, instruction: str) -> None:
        digest = hashlib.blake2b(instruction.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        self.instructions.setdefault(source, set()).add(digest)

    def count_input(self, source: str, n: int = 1) -> None:
        self.counts[source, INPUT] += n

    def add_dead_letter(self, letter: DeadLetter) -> None:
        self.counts[letter.source, DEAD_LETTER] += 1

    def count_rank(self, source: str, lang: str, rank: int) -> None:
        self.ranks[source, lang, m.rank_bin_label(rank)] += 1

    def rank_histograms(self, source: str) -> dict[str, dict[str, int]]:
        """Per query language, every rank bin in order, for a source the filter ranked."""
        langs = sorted({lang for ranked_source, lang, _ in self.ranks if ranked_source == source})
        return {lang: {label: self.ranks[source, lang, label] for label in m.RANK_BIN_LABELS} for lang in langs}

    def count_dropped(self, source: str, reason: str, n: int = 1) -> None:
        self.counts[source, _DROPPED + reason] += n

    def add_drop(self, drop: Drop) -> None:
        record = drop.record
        self.count_dropped(record[f.SOURCE], drop.reason)
        lang = declared_language(record)
        if lang is not None:
            self.languages[record[f.SOURCE], lang, _DROPPED + drop.reason] += 1
        if self.sample_size:
            sample = self.samples.setdefault(drop.reason, [])
            public = {key: value for key, value in record.items() if not key.startswith("_")}
            sample.append({**public, r.REASON: drop.reason, r.DETAIL: drop.detail, r.ORIGIN: record.get(f.ORIGIN, "")})
            if len(sample) >= 2 * self.sample_size:
                self._trim(drop.reason)

    def merge(self, other: "FunnelReport") -> "FunnelReport":
        self.counts.update(other.counts)
        self.ranks.update(other.ranks)
        self.skipped.update(other.skipped)
        self.languages.update(other.languages)
        self.language_input.update(other.language_input)
        self.lid_scores.update(other.lid_scores)
        for source, digests in other.instructions.items():
            self.instructions.setdefault(source, set()).update(digests)
        for reason, sample in other.samples.items():
            self.samples.setdefault(reason, []).extend(sample)
            self._trim(reason)
        return self

    def _trim(self, reason: str) -> None:
        sample = self.samples[reason]
        sample.sort(key=lambda row: (row.get(f.ID) or "", row[r.ORIGIN]))
        del sample[self.sample_size :]

    def sources(self) -> set[str]:
        return {source for source, _ in self.counts}

    def totals_for(self, source: str | None) -> dict:
        """input, dead_letter and dropped-by-reason, for one source or all."""
        totals = {INPUT: 0, DEAD_LETTER: 0, "dropped": Counter()}
        for (counted_source, event), n in self.counts.items():
            if source is not None and counted_source != source:
                continue
            if event.startswith(_DROPPED):
                totals["dropped"][event[len(_DROPPED) :]] += n
            else:
                totals[event] += n
        totals["dropped"] = dict(sorted(totals["dropped"].items()))
        return totals


def sampling_weights(outputs: dict[str, int], alpha: float) -> dict[str, float]:
    """Each source's share of training batches: n_i^alpha / sum_j n_j^alpha."""
    powered = {source: n**alpha for source, n in outputs.items() if n}
    total = sum(powered.values())
    return {source: powered.get(source, 0.0) / total if total else 0.0 for source in outputs}


def build_manifest(
    pipeline: str,
    schema: pa.Schema | dict[str, str],
    options: dict,
    report: FunnelReport,
    written: list[tuple[m.Shard, dict[str, m.SideLengths]]],
    sampling_alpha: float | None,
    parent: m.Parent | None = None,
    weights: dict[str, float] | None = None,
    teacher: m.Teacher | None = None,
) -> m.Manifest:
    """The manifest, from each written shard's entry and lengths; pydantic refuses it,
    naming the field, if any record is unaccounted for or any count disagrees with another.

    ``schema``: the shards' Arrow schema, or its description as a manifest records it. ``weights``:
    the sources' sampling weights where they are not this output's own, by ``sampling_alpha`` (a split
    part keeps its parent's). ``teacher``: a teacher run's cross-encoder.
    """
    written = sorted(written, key=lambda item: item[0].path)
    shards = [shard for shard, _ in written]
    names = sorted(report.sources() | {shard.source for shard in shards})
    outputs = {source: sum(shard.rows for shard in shards if shard.source == source) for source in names}
    if weights is None:
        weights = sampling_weights(outputs, sampling_alpha)
    sources = {}
    for source in names:
        languages = Counter()
        lengths: dict[str, m.SideLengths] = {}
        for shard, shard_lengths in written:
            if shard.source == source:
                languages.update(shard.languages)
                for lang, sides in shard_lengths.items():
                    lengths.setdefault(lang, m.SideLengths()).merge(sides)
        sources[source] = dict(
            **report.totals_for(source),
            output=outputs[source],
            languages=dict(sorted(languages.items())),
            lengths=dict(sorted(lengths.items())),
            sampling_weight=weights[source],
            consistency_ranks=report.rank_histograms(source),
            skipped_negatives=report.skipped_for(source),
            declared_languages=report.language_totals(source),
            language_input=report.language_input_for(source),
            lid_scores=report.lid_scores_for(source),
            instructions=len(report.instructions[source]) if source in report.instructions else None,
        )
    # Validated as one document, so that an error names its place in it (sources.<name>.input, ...).
    return m.Manifest.model_validate(
        {
            "pipeline": pipeline,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "options": options,
            "schema": schema if isinstance(schema, dict) else schema_description(schema),
            "shards": shards,
            "totals": {**report.totals_for(None), "output": sum(shard.rows for shard in shards)},
            "sources": sources,
            "parent": parent,
            "teacher": teacher,
        }
    )
