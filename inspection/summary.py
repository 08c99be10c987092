"""``inspect summary``: totals, the funnel of drops by stage, per-source and per-language lengths, per declared
language records in, out and why dropped, shard sizes."""

import statistics
from collections import Counter

from inspection.terminal import terminal_safe
from schemas import reasons
from schemas.manifest import LENGTH_BINS, LengthStats, Manifest, SideLengths

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

    sources, lengths_by_query_lang = [], {}
    for name, source in sorted(manifest.sources.items()):
        merged = merged_lengths(source.lengths.values())
        sources.append({
            "source": name, "input": source.input, "output": source.output,
            "share": _share(source.output, totals.output), "dropped": sum(source.dropped.values()),
            "dead_letter": source.dead_letter, "sampling_weight": source.sampling_weight,
            "query_chars": _length_summary(merged[0]), "passage_chars": _length_summary(merged[1]),
        })
        for lang, sides in source.lengths.items():
            lengths_by_query_lang.setdefault(lang, SideLengths()).merge(sides)
    language_rows = []
    for row in language_flow(manifest):
        sides = lengths_by_query_lang.get(row["language"], SideLengths())
        language_rows.append({
            **row, "share": _share(row["output"], totals.output),
            "query_chars": _length_summary(sides.query), "passage_chars": _length_summary(sides.passage),
        })
    sizes = [shard.bytes for shard in manifest.shards]
    generation = {"generation": manifest.generation.model_dump()} if manifest.generation else {}
    teacher = {"teacher": manifest.teacher.model_dump()} if manifest.teacher else {}
    declared = {}
    for source in manifest.sources.values():
        for lang, counts in source.declared_languages.items():
            merged = declared.setdefault(lang, {"input": 0, "output": 0, "dropped": Counter(), "unverified": 0})
            merged["input"] += counts.input
            merged["output"] += counts.output
            merged["dropped"].update(counts.dropped)
            merged["unverified"] += counts.unverified
    # The languages that lose most first: a language language ID throws away is seen at a glance.
    declared_rows = [
        {"language": lang, "input": c["input"], "output": c["output"], "kept": _share(c["output"], c["input"]),
         "dropped": dict(c["dropped"].most_common()), "unverified": c["unverified"]}
        for lang, c in sorted(declared.items(), key=lambda item: (_share(item[1]["output"], item[1]["input"]), item[0]))
    ]
    return {
        **generation,
        **teacher,
        "pipeline": manifest.pipeline, "created": manifest.created,
        "totals": totals.model_dump(), "funnel": funnel, "sources": sources, "languages": language_rows,
        "declared_languages": declared_rows,
        "shards": {
            "count": len(sizes), "bytes": sum(sizes),
            "min_bytes": min(sizes, default=0), "median_bytes": int(statistics.median(sizes)) if sizes else 0,
            "max_bytes": max(sizes, default=0),
        },
    }


def merged_lengths(sides) -> tuple[LengthStats, LengthStats]:
    query, passage = LengthStats(), LengthStats()
    for side in sides:
        query.merge(side.query)
        passage.merge(side.passage)
    return query, passage


def rows_per_language(manifest: Manifest) -> Counter:
    """Rows with each language on either side, over all sources."""
    languages = Counter()
    for source in manifest.sources.values():
        languages.update(source.languages)
    return languages


def language_flow(manifest: Manifest) -> list[dict]:
    """Per language, rows in and out, both sides counted once per row (a de-en row once for de and once for
    en, an en-en row once for en): ``input`` the rows reaching language ID (the stages before it decide on no
    language), ``output`` the rows written, ``kept`` their ratio. ``input`` is None for a run that did not
    record it (a derived run, or one of an older version). Most rows written first."""
    recorded = any(source.language_input for source in manifest.sources.values())
    inputs = Counter()
    for source in manifest.sources.values():
        inputs.update(source.language_input)
    outputs = rows_per_language(manifest)
    return [
        {"language": lang, "input": inputs[lang] if recorded else None, "output": outputs[lang],
         "kept": _share(outputs[lang], inputs[lang]) if recorded else None}
        for lang in sorted(set(inputs) | set(outputs), key=lambda lang: (-outputs[lang], -inputs[lang], lang))
    ]


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
    ]
    if manifest.teacher is not None:
        teacher = manifest.teacher
        revision = f" at {teacher.revision}" if teacher.revision else ""
        lines.append(f"teacher_scores by {teacher.name}{revision}, weights sha256 {teacher.weights_sha256[:16]}")
    lines.append("")
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
    skipped = Counter()
    for source in sources:
        skipped.update(manifest.sources[source].skipped_negatives)
    if skipped:
        # Candidates, not records: a table of their own, outside the funnel's accounting.
        lines.append("")
        rows = [
            [reason, count, *(manifest.sources[source].skipped_negatives.get(reason, 0) or "." for source in sources)]
            for reason, count in sorted(skipped.items(), key=lambda item: (-item[1], item[0]))
        ]
        lines += table(["skipped negatives", "all", *sources], rows)
    if data["languages"]:
        lines.append("")

        def rows_in(source: str, lang: str):
            return manifest.sources[source].languages.get(lang) or "."

        lines += table(
            ["language", "input", "output", "kept", "share", "query chars", "passage chars", *sources],
            [
                [row["language"], "?" if row["input"] is None else row["input"], row["output"],
                 "?" if row["kept"] is None else f"{row['kept']:.1%}", f"{row['share']:.1%}",
                 _lengths_cell(row["query_chars"]), _lengths_cell(row["passage_chars"]),
                 *(rows_in(source, row["language"]) for source in sources)]
                for row in data["languages"]
            ],
        )
        lines.append("languages: rows with it on either side, once per row (input: reaching language ID); "
                     "chars: of the rows whose query is in it")
    if data["declared_languages"]:
        lines.append("")
        lines += table(
            ["declared", "input", "output", "kept", "unverified", "dropped"],
            [
                [row["language"], row["input"], row["output"], f"{row['kept']:.1%}", row["unverified"] or ".",
                 ", ".join(f"{reason} {n}" for reason, n in row["dropped"].items()) or "-"]
                for row in data["declared_languages"]
            ],
            left=(0, 5),
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
