"""What a data engineer asks of a finished run: summary, verify, sample, diff, report.

Pure functions over a parsed manifest and file access passed in, so they work
the same on local and gs:// directories; verify is ``run_store.verify``, whose
shard check ``sample_rows`` applies to every shard it reads.
"""

import html
import io
import json
import posixpath
import random
import re
import statistics
from collections import Counter
from typing import BinaryIO, Callable, Collection

import pyarrow as pa

from mining import run_store
from schemas import reasons
from schemas import pairs as f
from schemas import removed as r
from schemas.manifest import LENGTH_BINS, RANK_BIN_LABELS, REJECTED_DIR, LengthStats, Manifest

OpenFile = Callable[[str], BinaryIO]

def percentile(stats: LengthStats, q: float) -> int:
    """Approximate q-th percentile (0-1) of a power-of-two length histogram, interpolated within a bin."""
    if not stats.count:
        return 0
    rank = q * stats.count
    seen = 0
    for index, n in enumerate(stats.histogram):
        if n and seen + n >= rank:
            low, high = (0, 1) if index == 0 else (2 ** (index - 1), 2**index)
            return round(low + (high - low) * (rank - seen) / n)
        seen += n
    return 2 ** (LENGTH_BINS - 1)


def _length_summary(stats: LengthStats) -> dict:
    mean = stats.sum / stats.count if stats.count else 0.0
    return {"mean": round(mean, 1), "p50": percentile(stats, 0.5), "p90": percentile(stats, 0.9)}


def summarize(manifest: Manifest) -> dict:
    """Everything ``inspect summary`` prints, as plain data (its --json form)."""
    totals = manifest.totals
    funnel, remaining = [{"stage": "input", "remaining": totals.input}], totals.input
    by_stage = {stage.name: {} for stage in reasons.MINING_FUNNEL}
    for reason, n in totals.dropped.items():
        by_stage.setdefault(reasons.stage_of(reason).name, {})[reason] = n
    for stage, dropped in by_stage.items():
        lost = sum(dropped.values()) + (totals.dead_letter if stage == reasons.READ.name else 0)
        remaining -= lost
        entry = {"stage": stage, "dropped": dict(sorted(dropped.items())), "remaining": remaining}
        if stage == reasons.READ.name:
            entry["dead_letter"] = totals.dead_letter
        funnel.append(entry)

    sources, languages = [], {}
    for name, source in sorted(manifest.sources.items()):
        merged = _merged_lengths(source.lengths.values())
        sources.append({
            "source": name, "input": source.input, "output": source.output,
            "share": _share(source.output, totals.output), "dropped": sum(source.dropped.values()),
            "dead_letter": source.dead_letter, "sampling_weight": source.sampling_weight,
            "query_chars": _length_summary(merged[0]), "passage_chars": _length_summary(merged[1]),
        })
        for lang, sides in source.lengths.items():
            query, passage = languages.setdefault(lang, (LengthStats(), LengthStats()))
            query.merge(sides.query)
            passage.merge(sides.passage)
    language_rows = [
        {"language": lang, "rows": query.count, "share": _share(query.count, totals.output),
         "query_chars": _length_summary(query), "passage_chars": _length_summary(passage)}
        for lang, (query, passage) in sorted(languages.items(), key=lambda item: (-item[1][0].count, item[0]))
    ]
    sizes = [shard.bytes for shard in manifest.shards]
    generation = {"generation": manifest.generation.model_dump()} if manifest.generation else {}
    return {
        **generation,
        "pipeline": manifest.pipeline, "created": manifest.created,
        "totals": totals.model_dump(), "funnel": funnel, "sources": sources, "languages": language_rows,
        "shards": {
            "count": len(sizes), "bytes": sum(sizes),
            "min_bytes": min(sizes, default=0), "median_bytes": int(statistics.median(sizes)) if sizes else 0,
            "max_bytes": max(sizes, default=0),
        },
    }


def _merged_lengths(sides) -> tuple[LengthStats, LengthStats]:
    query, passage = LengthStats(), LengthStats()
    for side in sides:
        query.merge(side.query)
        passage.merge(side.passage)
    return query, passage


def _share(n: int, total: int) -> float:
    return round(n / total, 4) if total else 0.0


def table(header: list[str], rows: list[list], left: tuple[int, ...] = (0,)) -> list[str]:
    """Aligned plain-text columns: those in ``left`` left-aligned, numbers right."""
    cells = [header] + [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return [
        "  ".join(
            cell.ljust(width) if i in left else cell.rjust(width) for i, (cell, width) in enumerate(zip(row, widths))
        ).rstrip()
        for row in cells
    ]


def _dollars(cost: float | None) -> str:
    return "unpriced" if cost is None else f"${cost:.4f}"


def format_generation(generation, location: str) -> str:
    """A generation run: prompts, their ends, requests, tokens and cost per model, tasks and files."""
    failed = sum(generation.failed.values())
    price = generation.price_per_1k
    lines = [
        f"generate: {generation.generations} generations in {len(generation.files)} file(s) under {location}",
        f"model {generation.model} at {generation.base_url}",
        f"prompts {generation.prompts} = generations {generation.generations} + task lists {generation.task_lists}"
        f" + dead-lettered {failed}",
        f"answered from the cache {generation.cached}, sent {generation.sent} "
        f"({generation.requests} HTTP requests, {generation.requests - generation.sent} retries)",
        f"tokens: prompt {generation.prompt_tokens}, completion {generation.completion_tokens}; cost "
        f"{_dollars(generation.cost)}"
        + (f" (per 1k tokens: input ${price[0]:g}, output ${price[1]:g})" if price else ""),
        "",
    ]
    if generation.usage:
        lines += table(
            ["model", "responses", "prompt tokens", "completion tokens", "cost"],
            [[model, usage.requests, usage.prompt_tokens, usage.completion_tokens, _dollars(usage.cost)]
             for model, usage in sorted(generation.usage.items())],
        )
        lines.append("")
    rows_by_type: Counter = Counter()
    for file in generation.files:
        rows_by_type[file.task_type] += file.rows
    task_types = sorted(set(rows_by_type) | set(generation.tasks))
    if task_types:
        lines += table(
            ["task type", "tasks", "generations"],
            [[task_type, generation.tasks.get(task_type, "-"), rows_by_type[task_type]] for task_type in task_types],
        )
    if generation.failed:
        lines += ["", "dead-lettered: " + ", ".join(f"{reason} {n}" for reason, n in sorted(generation.failed.items()))]
    return terminal_safe("\n".join(lines))


def format_summary(manifest: Manifest, location: str) -> str:
    if manifest.generation is not None:
        return format_generation(manifest.generation, location)
    data = summarize(manifest)
    totals = manifest.totals
    dropped = sum(totals.dropped.values())
    lines = [
        f"{manifest.pipeline}: {totals.output} pairs in {len(manifest.shards)} shard(s) under {location}",
        f"input {totals.input} = output {totals.output} + dropped {dropped} + dead-lettered {totals.dead_letter}",
        "",
    ]
    funnel_rows = []
    for step in data["funnel"][1:]:
        lost = [f"{reason} {n}" for reason, n in sorted(step["dropped"].items(), key=lambda item: -item[1])]
        if step.get("dead_letter"):
            lost.insert(0, f"dead_letter {step['dead_letter']}")
        funnel_rows.append([step["stage"], step["remaining"], ", ".join(lost) or "-"])
    lines += table(["funnel", f"{totals.input} in", "removed"], funnel_rows, left=(0, 2))
    lines.append("")

    sources = sorted(manifest.sources)
    lines += table(
        ["source", "input", "output", "share", "dropped", "dead_letter", "weight", "query chars", "passage chars"],
        [
            [s["source"], s["input"], s["output"], f"{s['share']:.1%}", s["dropped"], s["dead_letter"],
             f"{s['sampling_weight']:.3f}", _lengths_cell(s["query_chars"]), _lengths_cell(s["passage_chars"])]
            for s in data["sources"]
        ],
    )
    if totals.dropped:
        lines.append("")
        rows = [
            [reason, count, *(manifest.sources[source].dropped.get(reason, 0) or "." for source in sources)]
            for reason, count in sorted(totals.dropped.items(), key=lambda item: (-item[1], item[0]))
        ]
        lines += table(["dropped", "all", *sources], rows)
    if data["languages"]:
        lines.append("")

        def rows_in(source: str, lang: str):
            sides = manifest.sources[source].lengths.get(lang)
            return sides.query.count if sides else "."

        lines += table(
            ["language", "rows", "share", "query chars", "passage chars", *sources],
            [
                [row["language"], row["rows"], f"{row['share']:.1%}", _lengths_cell(row["query_chars"]),
                 _lengths_cell(row["passage_chars"]), *(rows_in(source, row["language"]) for source in sources)]
                for row in data["languages"]
            ],
        )
    shards = data["shards"]
    lines += ["", f"shards: {shards['count']}, {_size(shards['bytes'])} in all, "
              f"{_size(shards['min_bytes'])} / {_size(shards['median_bytes'])} / {_size(shards['max_bytes'])} "
              "min / median / max"]
    return terminal_safe("\n".join(lines))


def _lengths_cell(lengths: dict) -> str:
    return f"{lengths['mean']:.0f} ({lengths['p50']}/{lengths['p90']})"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


class InspectionError(ValueError):
    """A run whose files cannot be read as its manifest says, or a request it cannot answer, in one line."""


# Rows ``inspect sample`` holds in memory at once (reservoir sampling keeps n rows).
MAX_SAMPLE_ROWS = 100_000


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
        _refuse_unknown("language", lang, _languages(manifest))
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
            lines = [head, f"  query:   {_cut(row[f.QUERY], width)}", f"  passage: {_cut(row[f.PASSAGE], width)}"]
            lines += [f"  negative: {_cut(text, width)}" for text in row.get(f.NEGATIVES) or []]
            if row.get(f.TASK):
                lines.append(f"  task:    {row[f.TASK]}")
        else:
            where = f"{row.get(r.FILE)}:{row.get(r.LINE)}"
            lines = [f"[{row.get(f.SOURCE)}] {row.get(r.REASON)}: {row.get(r.DETAIL)}  ({where})",
                     f"  payload: {_cut(row.get(r.PAYLOAD), width)}"]
        blocks.append(terminal_safe("\n".join(lines)))
    return "\n\n".join(blocks)


def _cut(text, width: int) -> str:
    """One line of at most ``width`` characters: line breaks inside are shown escaped."""
    text = _ESCAPED.sub(_escape, str(text))
    return text if len(text) <= width else text[: width - 1] + "…"


# Characters that would drive a terminal rather than show (ANSI escapes, bidi overrides,
# zero-width marks, line separators) or cannot be printed at all (lone surrogates).
_CONTROLS = "\x00-\x09\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ud800-\udfff"
_UNSAFE = re.compile(f"[{_CONTROLS}]")
_ESCAPED = re.compile(f"[{_CONTROLS}\n]")


def _escape(match: re.Match) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


def terminal_safe(text: str) -> str:
    """``text`` with every character that could drive the terminal written as an escape; line breaks kept."""
    return _UNSAFE.sub(_escape, text)


def diff(old: Manifest, new: Manifest) -> list[str]:
    """What changed from one run to another, one line per difference."""
    lines = []
    for key in sorted(set(old.options) | set(new.options)):
        if old.options.get(key) != new.options.get(key):
            lines.append(f"option {key}: {old.options.get(key)!r} -> {new.options.get(key)!r}")
    for field in ("input", "output", "dead_letter"):
        _changed(lines, f"total {field}", getattr(old.totals, field), getattr(new.totals, field))
    for reason in sorted(set(old.totals.dropped) | set(new.totals.dropped)):
        _changed(lines, f"dropped {reason}", old.totals.dropped.get(reason, 0), new.totals.dropped.get(reason, 0))
    for name in sorted(set(old.sources) | set(new.sources)):
        before, after = old.sources.get(name), new.sources.get(name)
        _changed(lines, f"source {name} output", before.output if before else 0, after.output if after else 0)
    old_languages, new_languages = _languages(old), _languages(new)
    for lang in sorted(set(old_languages) | set(new_languages)):
        _changed(lines, f"language {lang} rows", old_languages.get(lang, 0), new_languages.get(lang, 0))
    old_shards = {shard.path: shard.sha256 for shard in old.shards}
    new_shards = {shard.path: shard.sha256 for shard in new.shards}
    lines += [f"shard removed {path}" for path in sorted(set(old_shards) - set(new_shards))]
    lines += [f"shard added {path}" for path in sorted(set(new_shards) - set(old_shards))]
    lines += [f"shard changed {path}" for path in sorted(set(old_shards) & set(new_shards))
              if old_shards[path] != new_shards[path]]
    return lines


def _changed(lines: list[str], label: str, before: int, after: int) -> None:
    if before != after:
        lines.append(f"{label}: {before} -> {after} ({after - before:+d})")


def _languages(manifest: Manifest) -> Counter:
    languages = Counter()
    for source in manifest.sources.values():
        languages.update(source.languages)
    return languages


def report_html(manifest: Manifest, title: str) -> str:
    """One self-contained page: funnel, languages, length histograms per source (inline SVG, no scripts)."""
    data = summarize(manifest)
    funnel = _bars([(step["stage"], step["remaining"]) for step in data["funnel"]])
    languages = _bars([(row["language"], row["rows"]) for row in data["languages"]])
    histograms = "".join(
        f"<figure><figcaption>{html.escape(name)}: passage characters</figcaption>"
        + _bars(_histogram_bars(_merged_lengths(source.lengths.values())[1]))
        + "</figure>"
        for name, source in sorted(manifest.sources.items())
    )
    ranks = Counter()
    for source in manifest.sources.values():
        for by_bin in source.consistency_ranks.values():
            ranks.update(by_bin)
    rank_section = (
        "<h2>Consistency ranks (own passage among the pool)</h2>"
        + _bars([(label, ranks[label]) for label in RANK_BIN_LABELS if label in ranks])
        if ranks else ""
    )
    sources = "".join(
        f"<tr><td>{html.escape(s['source'])}</td><td>{s['input']}</td><td>{s['output']}</td>"
        f"<td>{s['dropped']}</td><td>{s['dead_letter']}</td><td>{s['sampling_weight']:.3f}</td></tr>"
        for s in data["sources"]
    )
    totals = manifest.totals
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2rem;color:#222}} h1{{font-size:1.4rem}}
table{{border-collapse:collapse}} td,th{{padding:.2rem .6rem;border-bottom:1px solid #ddd;text-align:right}}
td:first-child,th:first-child{{text-align:left}} figure{{display:inline-block;margin:0 2rem 1rem 0;vertical-align:top}}
svg text{{font-size:12px}}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(manifest.pipeline)} run of {html.escape(manifest.created)}:
 input {totals.input} = output {totals.output}
 + dropped {sum(totals.dropped.values())} + dead-lettered {totals.dead_letter};
 {len(manifest.shards)} shards.</p>
<h2>Funnel</h2>{funnel}
<h2>Sources</h2><table><tr><th>source</th><th>input</th><th>output</th><th>dropped</th><th>dead letter</th>
<th>weight</th></tr>{sources}</table>
<h2>Languages (of the query side)</h2>{languages}
<h2>Passage lengths</h2>{histograms}
{rank_section}
</body></html>
"""


def _histogram_bars(stats: LengthStats) -> list[tuple[str, int]]:
    """Bins from the first to the last that counts anything, empty ones between included."""
    used = [index for index, n in enumerate(stats.histogram) if n]
    if not used:
        return []
    return [
        ("0" if index == 0 else f"{2 ** (index - 1)}+", stats.histogram[index])
        for index in range(used[0], used[-1] + 1)
    ]


def _bars(items: list[tuple[str, int]], width: int = 420, bar: int = 18) -> str:
    """A horizontal bar chart as inline SVG."""
    top = max((n for _, n in items), default=0) or 1
    label_width = 12 + 8 * max((len(label) for label, _ in items), default=0)
    rows = []
    for index, (label, n) in enumerate(items):
        y = index * (bar + 4)
        length = round(width * n / top)
        rows.append(
            f'<text x="{label_width - 6}" y="{y + bar - 5}" text-anchor="end">{html.escape(label)}</text>'
            f'<rect x="{label_width}" y="{y}" width="{length}" height="{bar}" fill="#4878a8"/>'
            f'<text x="{label_width + length + 4}" y="{y + bar - 5}">{n}</text>'
        )
    height = len(items) * (bar + 4)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_width + width + 60}" height="{height}" '
            f'role="img">{"".join(rows)}</svg>')
