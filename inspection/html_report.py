"""``inspect report``: one self-contained HTML page of a run, every string from its manifest escaped."""

import html
from collections import Counter

from inspection.summary import merged_lengths, summarize
from schemas.manifest import RANK_BIN_LABELS, LengthStats, Manifest


def report_html(manifest: Manifest, title: str) -> str:
    """One self-contained page: funnel, languages, length histograms per source (inline SVG, no scripts)."""
    data = summarize(manifest)
    funnel = _bars([(step["stage"], step["remaining"]) for step in data["funnel"]])
    languages = _bars([(row["language"], row["rows"]) for row in data["languages"]])
    histograms = "".join(
        f"<figure><figcaption>{html.escape(name)}: passage characters</figcaption>"
        + _bars(_histogram_bars(merged_lengths(source.lengths.values())[1]))
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
    declared = "".join(
        f"<tr><td>{html.escape(row['language'])}</td><td>{row['input']}</td><td>{row['output']}</td>"
        f"<td>{row['kept']:.1%}</td><td>{row['unverified']}</td>"
        f"<td>{html.escape(', '.join(f'{reason} {n}' for reason, n in row['dropped'].items()))}</td></tr>"
        for row in data["declared_languages"]
    )
    declared_section = (
        "<h2>Declared languages (fewest kept first)</h2><table><tr><th>language</th><th>input</th><th>output</th>"
        f"<th>kept</th><th>unverified</th><th>dropped</th></tr>{declared}</table>"
        if declared else ""
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
{declared_section}
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
