"""The funnel summary printed after a run, from its manifest."""

from collections import Counter

from schemas.manifest import Manifest


def _table(header: list[str], rows: list[list]) -> list[str]:
    cells = [header] + [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(width) if i == 0 else cell.rjust(width) for i, (cell, width) in enumerate(zip(row, widths)))
        for row in cells
    ]


def format_summary(manifest: Manifest, location: str) -> str:
    totals = manifest.totals
    dropped = sum(totals.dropped.values())
    lines = [
        f"{manifest.pipeline}: {totals.output} pairs in {len(manifest.shards)} shard(s) under {location}",
        f"input {totals.input} = output {totals.output} + dropped {dropped} + dead-lettered {totals.dead_letter}",
        "",
    ]
    sources = sorted(manifest.sources)
    by_source = [
        [source, s.input, s.output, sum(s.dropped.values()), s.dead_letter, f"{s.sampling_weight:.3f}"]
        for source, s in ((source, manifest.sources[source]) for source in sources)
    ]
    by_source.append(["all", totals.input, totals.output, dropped, totals.dead_letter, ""])
    lines += _table(["source", "input", "output", "dropped", "dead_letter", "weight"], by_source)

    if totals.dropped:
        lines.append("")
        rows = [
            [reason, count, *(manifest.sources[source].dropped.get(reason, 0) or "." for source in sources)]
            for reason, count in sorted(totals.dropped.items(), key=lambda item: (-item[1], item[0]))
        ]
        lines += _table(["dropped", "all", *sources], rows)

    languages = Counter()
    for source in sources:
        languages.update(manifest.sources[source].languages)
    if languages:
        lines.append("")
        rows = [
            [lang, count, *(manifest.sources[source].languages.get(lang, 0) or "." for source in sources)]
            for lang, count in sorted(languages.items(), key=lambda item: (-item[1], item[0]))
        ]
        lines += _table(["language", "rows", *sources], rows)
    return "\n".join(lines)
