"""``inspect sample``: rows of a run, or its removed records of one reason, drawn uniformly while streaming."""

import io
import json
import posixpath
import random
from typing import BinaryIO, Callable, Collection

import pyarrow as pa

from inspection.summary import rows_per_language
from inspection.terminal import clipped_line, terminal_safe
from mining import run_store
from schemas import pairs as f
from schemas import removed as r
from schemas.manifest import REJECTED_DIR, Manifest

OpenFile = Callable[[str], BinaryIO]

# Rows ``inspect sample`` holds in memory at once (reservoir sampling keeps n rows).
MAX_SAMPLE_ROWS = 100_000


class InspectionError(ValueError):
    """A run whose files cannot be read as its manifest says, or a request it cannot answer, in one line."""


class _Reservoir:
    """``n`` items drawn uniformly from a stream of unknown length, seeded, holding only ``n``."""

    def __init__(self, n: int, seed: int):
        self._rng = random.Random(seed)
        self._n = n
        self.chosen: list = []
        self._seen = 0

    def offer(self, item) -> None:
        self._seen += 1
        if len(self.chosen) < self._n:
            self.chosen.append(item)
        elif (slot := self._rng.randrange(self._seen)) < self._n:
            self.chosen[slot] = item


def _refuse_unknown(kind: str, value: str, known) -> None:
    if value not in known:
        raise InspectionError(f"no {kind} {value!r} in this run; its {kind}s: {', '.join(sorted(known)) or 'none'}")


def sample_rows(
    manifest: Manifest, open_file: OpenFile, join: Callable[..., str], present: Collection[str], n: int, seed: int,
    source: str | None = None, lang: str | None = None,
) -> list[dict]:
    """``n`` rows drawn uniformly (reservoir sampling, seeded) from the matching rows, streaming.

    Each shard read is checked as ``run_store.verify`` checks it, so no row of a damaged shard is shown.
    """
    if source is not None:
        _refuse_unknown("source", source, manifest.sources)
    if lang is not None:
        _refuse_unknown("language", lang, rows_per_language(manifest))
    reservoir = _Reservoir(n, seed)

    def take(batch: pa.RecordBatch) -> None:
        for row in batch.to_pylist():
            if lang is None or lang in (row["query_lang"], row["passage_lang"]):
                reservoir.offer(row)

    for shard in manifest.shards:
        if source is not None and shard.source != source or lang is not None and lang not in shard.languages:
            continue
        problems = run_store.shard_problems(shard, open_file, join(shard.path), present, manifest.schema_, take)
        if problems:
            raise InspectionError(f"{problems[0]}; `inspect verify` checks every shard")
    return reservoir.chosen


def first_rows(
    manifest: Manifest, open_file: OpenFile, join: Callable[..., str], present: Collection[str], per_source: int,
) -> list[dict]:
    """The first ``per_source`` rows of each source's smallest shard, read whole and checked as
    ``run_store.verify`` checks it: a few rows to show without reading the whole run."""
    smallest = {}
    for shard in sorted(manifest.shards, key=lambda shard: (shard.bytes, shard.path)):
        if shard.rows:
            smallest.setdefault(shard.source, shard)
    rows = []
    for _, shard in sorted(smallest.items()):
        taken = []

        def take(batch: pa.RecordBatch) -> None:
            if len(taken) < per_source:
                taken.extend(batch.slice(0, per_source - len(taken)).to_pylist())

        problems = run_store.shard_problems(shard, open_file, join(shard.path), present, manifest.schema_, take)
        if problems:
            raise InspectionError(f"{problems[0]}; `inspect verify` checks every shard")
        rows += taken
    return rows


def sample_removed(
    manifest: Manifest, reason: str, open_file: OpenFile, join: Callable[..., str],
    rejected_files: list[str], dead_letter_files: list[str], n: int, seed: int,
) -> list[dict]:
    """``n`` of the rejected rows kept for a drop ``reason``, or of the dead letters with that reason.

    Only the run's own reasons are accepted: drop reasons from the manifest, dead-letter
    reasons from its dead letters; no path is ever made from ``reason``.
    """
    reservoir = _Reservoir(n, seed)
    if reason in manifest.totals.dropped:
        kept = posixpath.join(REJECTED_DIR, f"{reason}.jsonl")
        if kept in rejected_files:
            _offer_lines(kept, open_file, join, reservoir.offer)
        return reservoir.chosen
    dead_letter_reasons = set()

    def offer_letter(letter: dict) -> None:
        if isinstance(letter.get(r.REASON), str):
            dead_letter_reasons.add(letter[r.REASON])
        if letter.get(r.REASON) == reason:
            reservoir.offer(letter)

    for path in dead_letter_files:
        _offer_lines(path, open_file, join, offer_letter)
    _refuse_unknown("reason", reason, set(manifest.totals.dropped) | dead_letter_reasons)
    return reservoir.chosen


def _offer_lines(path: str, open_file: OpenFile, join: Callable[..., str], offer: Callable[[dict], None]) -> None:
    """Each JSON object of a JSON-lines file, streaming."""
    number = 0
    try:
        with open_file(join(path)) as stream:
            # Lines as bytes, so that a bad byte is told against its own line number.
            for number, line in enumerate(io.BufferedReader(stream, 1 << 20), start=1):
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
                offer(record)
    except (OSError, ValueError) as error:
        raise InspectionError(f"{path}:{number}: cannot be read ({error})") from None


def format_rows(rows: list[dict], width: int = 300) -> str:
    """Rows readable in a terminal: one block each, long texts cut."""
    blocks = []
    for row in rows:
        if f.QUERY in row:
            head = f"[{row.get(f.SOURCE)} {row.get(f.QUERY_LANG)}->{row.get(f.PASSAGE_LANG)}] {row.get(f.ID)}"
            if row.get(r.REASON):
                head += f"  ({row[r.REASON]}{': ' + row[r.DETAIL] if row.get(r.DETAIL) else ''})"
            lines = [head, f"  query:   {clipped_line(row[f.QUERY], width)}",
                     f"  passage: {clipped_line(row[f.PASSAGE], width)}"]
            lines += [f"  negative: {clipped_line(text, width)}" for text in row.get(f.NEGATIVES) or []]
            if row.get(f.TASK):
                lines.append(f"  task:    {row[f.TASK]}")
        else:
            where = f"{row.get(r.FILE)}:{row.get(r.LINE)}"
            lines = [f"[{row.get(f.SOURCE)}] {row.get(r.REASON)}: {row.get(r.DETAIL)}  ({where})",
                     f"  payload: {clipped_line(row.get(r.PAYLOAD), width)}"]
        blocks.append(terminal_safe("\n".join(lines)))
    return "\n\n".join(blocks)
