"""``inspect report``: one self-contained HTML page of a run for a data engineer, every string from its
manifest and its rows escaped; inline CSS and SVG, no scripts, nothing fetched."""

import html
import json
from collections import Counter
from typing import Callable, Collection

from inspection.sample import OpenFile, first_rows, sample_removed
from inspection.summary import language_flow, summarize
from mining.languages import UNDETERMINED
from schemas import pairs as f
from schemas import reasons
from schemas import removed as r
from schemas.manifest import LENGTH_BINS, LID_SCORE_BINS, RANK_BIN_LABELS, LengthStats, Manifest, SideLengths

# Languages the query x passage view names; the rest are folded into OTHER.
TOP_LANGUAGES = 10
OTHER = "other"
# Characters of a sample's text shown; the rest is cut, marked with an ellipsis.
SHOWN_CHARS = 300
DEAD_LETTERS = "dead letters"
ROWS_PER_SOURCE = 3
ROWS_PER_REASON = 2

_STYLE = """
*{box-sizing:border-box} body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222;overflow-wrap:break-word}
h1{font-size:1.4rem;margin:0 0 .3rem} h2{font-size:1.15rem;margin:1.6rem 0 .4rem;border-bottom:2px solid #4878a8}
p.note{color:#555;margin:.2rem 0 .6rem;font-size:.9rem}
table{border-collapse:collapse;margin-bottom:.5rem;font-size:.9rem}
td,th{padding:.15rem .5rem;border-bottom:1px solid #ddd;text-align:right;vertical-align:top}
table.wide th{text-align:left}
.scroll{max-width:100%;overflow-x:auto}
th{background:#f0f3f7} td.l,th.l{text-align:left}
tr.stage td{background:#f7f7f7;font-weight:600;text-align:left}
table.wide{width:100%;table-layout:fixed} table.wide td{overflow-wrap:anywhere;white-space:pre-wrap;text-align:left}
.bar{display:flex;height:14px;min-width:240px;background:#eee} .bar span{display:block;height:100%}
.kept{background:#4878a8} .lost{background:#d9534f}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:.5rem 1.5rem}
figure.card{margin:0;padding:.3rem .6rem;border:1px solid #ddd} figcaption{font-weight:600}
.sides{display:flex;gap:1.5rem;flex-wrap:wrap}
svg text{font-size:10px;fill:#444} code{overflow-wrap:anywhere}
"""


def run_report(
    manifest: Manifest, title: str, open_file: OpenFile, join: Callable[..., str], shard_files: Collection[str],
    rejected_files: list[str],
) -> str:
    """The page of a run on storage: its manifest's figures, a few rows of its shards and of its rejected/."""
    rows = first_rows(manifest, open_file, join, shard_files, ROWS_PER_SOURCE)
    rejected = {
        reason: sample_removed(manifest, reason, open_file, join, rejected_files, [], ROWS_PER_REASON, seed=0)
        for reason in manifest.totals.dropped
    }
    return report_html(manifest, title, rows, rejected)


def report_html(
    manifest: Manifest, title: str, rows: list[dict] = (), rejected: dict[str, list[dict]] | None = None,
) -> str:
    """The page: the funnel, drop reasons by stage and source, languages in and out, query x passage
    languages, language-ID scores, query and passage lengths, a few written and rejected ``rows``
    (``rejected``: per reason), and the options."""
    data = summarize(manifest)
    totals = manifest.totals
    dropped = sum(totals.dropped.values())
    sections = [
        _funnel(data["funnel"], totals.output),
        _reasons(manifest, data["funnel"]),
        _sources(data["sources"]),
        _languages(manifest),
        _declared(data["declared_languages"]),
        _language_pairs(manifest),
        _lid_scores(manifest),
        _lengths(manifest),
        _ranks(manifest),
        _rows("Sample rows (the first of each source's smallest shard)", rows, removed=False),
        _rows("Rejected rows (from rejected/, a few per reason)",
              [row for _, kept in sorted((rejected or {}).items()) for row in kept], removed=True),
        _options(manifest.options),
    ]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>
<style>{_STYLE}</style></head><body>
<h1>{_e(title)}</h1>
<p>{_e(manifest.pipeline)} run of {_e(manifest.created)}:
 input <strong>{totals.input}</strong> = written <strong>{totals.output}</strong>
 + dropped <strong>{dropped}</strong> + dead-lettered <strong>{totals.dead_letter}</strong>;
 {len(manifest.shards)} shards, {sum(shard.bytes for shard in manifest.shards)} bytes.</p>
{"".join(sections)}
</body></html>
"""


def _e(value) -> str:
    return html.escape(str(value))


def _pct(n: int, total: int) -> str:
    return f"{n / total:.1%}" if total else "-"


def _bar(kept: int, lost: int, total: int) -> str:
    """Kept and lost as shares of ``total``, side by side."""
    if not total:
        return '<div class="bar"></div>'
    return (f'<div class="bar"><span class="kept" style="width:{100 * kept / total:.2f}%"></span>'
            f'<span class="lost" style="width:{100 * lost / total:.2f}%"></span></div>')


def _funnel(funnel: list[dict], written: int) -> str:
    records_in = funnel[0]["remaining"]
    rows, before = [], records_in
    for step in funnel[1:]:
        removed = before - step["remaining"]
        rows.append(
            f'<tr><td class="l">{_e(step["stage"])}</td><td>{before}</td><td>{removed}</td>'
            f'<td>{_pct(removed, before)}</td><td>{_pct(removed, records_in)}</td><td>{step["remaining"]}</td>'
            f'<td class="l" style="width:40%">{_bar(step["remaining"], removed, records_in)}</td></tr>'
        )
        before = step["remaining"]
    return (
        "<h2>Funnel</h2><p class=\"note\">Records after each stage, in pipeline order; removed: dropped for a"
        " reason, or dead-lettered at read.</p>"
        '<div class="scroll"><table style="width:100%"><tr><th class="l">stage</th><th>in</th><th>removed</th><th>of the stage\'s in</th>'
        '<th>of all input</th><th>out</th><th class="l">kept / removed, of all input</th></tr>'
        f'<tr><td class="l">input</td><td></td><td></td><td></td><td></td><td>{records_in}</td><td></td></tr>'
        f'{"".join(rows)}'
        f'<tr class="stage"><td>written</td><td></td><td></td><td></td><td></td><td style="text-align:right">'
        f'{written}</td><td></td></tr></table></div>'
    )


def _reasons(manifest: Manifest, funnel: list[dict]) -> str:
    names = sorted(manifest.sources)
    if not manifest.totals.dropped and not manifest.totals.dead_letter:
        return "<h2>Drop reasons</h2><p>No record was dropped or dead-lettered.</p>"
    head = "".join(f"<th>{_e(name)}</th>" for name in names)
    body = []
    for step in funnel[1:]:
        reason_rows = [(reason, n, {name: manifest.sources[name].dropped.get(reason, 0) for name in names})
                       for reason, n in sorted(step["dropped"].items(), key=lambda item: (-item[1], item[0]))]
        if step["stage"] == reasons.READ.name and manifest.totals.dead_letter:
            reason_rows.insert(0, (DEAD_LETTERS, manifest.totals.dead_letter,
                                   {name: manifest.sources[name].dead_letter for name in names}))
        if not reason_rows:
            continue
        body.append(f'<tr class="stage"><td colspan="{len(names) + 3}">{_e(step["stage"])}</td></tr>')
        for reason, n, by_source in reason_rows:
            cells = "".join(f"<td>{by_source[name] or '.'}</td>" for name in names)
            body.append(f'<tr><td class="l">{_e(reason)}</td><td>{n}</td>'
                        f"<td>{_pct(n, manifest.totals.input)}</td>{cells}</tr>")
    return ("<h2>Drop reasons, by stage and source</h2>"
            f'<div class="scroll"><table><tr><th class="l">reason</th><th>all</th><th>of input</th>{head}</tr>{"".join(body)}</table></div>')


def _sources(sources: list[dict]) -> str:
    rows = "".join(
        f'<tr><td class="l">{_e(s["source"])}</td><td>{s["input"]}</td><td>{s["output"]}</td>'
        f'<td>{_pct(s["output"], s["input"])}</td><td>{s["dropped"]}</td><td>{s["dead_letter"]}</td>'
        f'<td>{s["sampling_weight"]:.3f}</td><td class="l" style="width:30%">'
        f'{_bar(s["output"], s["input"] - s["output"], s["input"])}</td></tr>'
        for s in sources
    )
    return ('<h2>Sources</h2><div class="scroll"><table style="width:100%"><tr><th class="l">source</th><th>input</th><th>written</th>'
            '<th>kept</th><th>dropped</th><th>dead letters</th><th>weight</th><th class="l">kept / removed</th></tr>'
            f"{rows}</table></div>")


def _languages(manifest: Manifest) -> str:
    flow = language_flow(manifest)
    if not flow:
        return ""
    recorded = flow[0]["input"] is not None
    rows = "".join(
        f'<tr><td class="l">{_e(row["language"])}</td>'
        + (f'<td>{row["input"]}</td><td>{row["output"]}</td><td>{row["kept"]:.1%}</td>'
           f'<td class="l" style="width:40%">{_bar(row["output"], row["input"] - row["output"], row["input"])}</td>'
           if recorded else f'<td>{row["output"]}</td>')
        + "</tr>"
        for row in flow
    )
    head = ("<th>input</th><th>written</th><th>kept</th><th class=\"l\">kept / removed</th>" if recorded
            else "<th>written</th>")
    note = ("Rows with the language on either side, each row once per language (a de-en row counts for de and"
            " for en, an en-en row once for en). Input: rows reaching language ID; the stages before it decide"
            " on no language (their drops are in the funnel and under declared languages)."
            if recorded else "Rows written with the language on either side, once per row; this run recorded no"
            " language input (a derived run, or one of an older version).")
    return (f'<h2>Languages, input &rarr; written</h2><p class="note">{note}</p>'
            f'<div class="scroll"><table style="width:100%"><tr><th class="l">language</th>{head}</tr>{rows}</table></div>')


def _declared(declared: list[dict]) -> str:
    if not declared:
        return ""
    rows = "".join(
        f'<tr><td class="l">{_e(row["language"])}</td><td>{row["input"]}</td><td>{row["output"]}</td>'
        f'<td>{row["kept"]:.1%}</td><td>{row["unverified"]}</td>'
        f'<td class="l">{_e(", ".join(f"{reason} {n}" for reason, n in row["dropped"].items()))}</td></tr>'
        for row in declared
    )
    return ('<h2>Declared languages (fewest kept first)</h2><p class="note">Records read, under the language their'
            f" source declared ({UNDETERMINED}: none), and where they ended.</p>"
            '<div class="scroll"><table><tr><th class="l">language</th><th>input</th><th>written</th><th>kept</th><th>unverified</th>'
            f'<th class="l">dropped</th></tr>{rows}</table></div>')


def _language_pairs(manifest: Manifest) -> str:
    pairs = Counter()
    for shard in manifest.shards:
        for query_lang, by_passage in shard.language_pairs.items():
            for passage_lang, n in by_passage.items():
                pairs[query_lang, passage_lang] += n
    if not pairs:
        return ""
    either_side = Counter()
    for (query_lang, passage_lang), n in pairs.items():
        either_side.update(dict.fromkeys({query_lang, passage_lang}, n))
    top = [lang for lang, _ in sorted(either_side.items(), key=lambda item: (-item[1], item[0]))[:TOP_LANGUAGES]]
    folded = Counter()
    for (query_lang, passage_lang), n in pairs.items():
        folded[query_lang if query_lang in top else OTHER, passage_lang if passage_lang in top else OTHER] += n
    axis = top + ([OTHER] if any(OTHER in key for key in folded) else [])
    most = max(folded.values())
    head = "".join(f"<th>{_e(lang)}</th>" for lang in axis)
    body = []
    for query_lang in axis:
        cells = []
        for passage_lang in axis:
            n = folded[query_lang, passage_lang]
            shade = f' style="background:rgba(72,120,168,{0.1 + 0.9 * n / most:.2f})"' if n else ""
            cells.append(f"<td{shade}>{n or '.'}</td>")
        body.append(f'<tr><th class="l">{_e(query_lang)}</th>{"".join(cells)}'
                    f"<td>{sum(folded[query_lang, p] for p in axis)}</td></tr>")
    totals = "".join(f"<td>{sum(folded[q, p] for q in axis)}</td>" for p in axis)
    return ("<h2>Query language &times; passage language (written rows)</h2>"
            f'<p class="note">Rows: query language; columns: passage language; the {TOP_LANGUAGES} languages'
            f" with most rows, the rest as {OTHER}.</p>"
            f'<div class="scroll"><table><tr><th class="l">query \\ passage</th>{head}<th>all</th></tr>{"".join(body)}'
            f'<tr><th class="l">all</th>{totals}<td>{sum(folded.values())}</td></tr></table></div>')


def _columns(values: list[int], total: int, top: float, labels: list[str], column: int = 18) -> str:
    """A column chart as inline SVG: each value's share of ``total``, on a scale whose top is the share ``top``;
    every second label under its column."""
    height, axis = 60, 14
    parts = []
    for index, (n, label) in enumerate(zip(values, labels, strict=True)):
        share = n / total if total else 0.0
        bar = round(height * share / top) if top else 0
        x = index * column
        parts.append(
            f'<rect x="{x + 1}" y="{height - bar}" width="{column - 2}" height="{bar}" fill="#4878a8">'
            f"<title>{_e(label)}: {n} ({share:.1%})</title></rect>"
        )
        if index % 2 == 0 or column > 20:
            parts.append(f'<text x="{x + column / 2}" y="{height + 11}" text-anchor="middle">{_e(label)}</text>')
    width = len(values) * column
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + axis}" role="img">'
            f'<line x1="0" y1="{height}" x2="{width}" y2="{height}" stroke="#999"/>{"".join(parts)}</svg>')


def _lid_scores(manifest: Manifest) -> str:
    scored = {name: source.lid_scores for name, source in sorted(manifest.sources.items()) if source.lid_scores}
    if not scored:
        return ""
    labels = [f".{i}" for i in range(LID_SCORE_BINS)] + ["none"]
    charts = {
        name: {side: [*histogram.bins, histogram.unscored] for side, histogram in
               ((f.QUERY, scores.query), (f.PASSAGE, scores.passage))}
        for name, scores in scored.items()
    }
    top = max((n / sum(values) for sides in charts.values() for values in sides.values() if sum(values)
               for n in values), default=1.0)
    cards = "".join(
        _card(f"{name}: {sum(sides[f.QUERY])} pairs",
              *(_columns(sides[side], sum(sides[side]), top, labels, column=22) for side in (f.QUERY, f.PASSAGE)))
        for name, sides in charts.items()
    )
    return ("<h2>Language-ID scores of the pairs language ID kept</h2><p class=\"note\">fastText's probability of"
            " each side's language, in tenths (.9: 0.9 to 1.0); none: too short to identify, or kept unverified."
            f" Heights: share of the source's pairs, one scale for all.</p><div class=\"grid\">{cards}</div>")


def _card(caption: str, query: str, passage: str) -> str:
    """One source's query and passage charts, side by side."""
    return (f'<figure class="card"><figcaption>{_e(caption)}</figcaption><div class="sides">'
            f"<div><small>query</small><br>{query}</div><div><small>passage</small><br>{passage}</div></div></figure>")


def _length_label(index: int) -> str:
    if index == 0:
        return "0"
    low = 2 ** (index - 1)
    return f"{low // 1024}k" if low >= 1024 else str(low)


def _lengths(manifest: Manifest) -> str:
    merged = {}
    for name, source in sorted(manifest.sources.items()):
        sides = SideLengths()
        for by_lang in source.lengths.values():
            sides.merge(by_lang)
        if sides.query.count:
            merged[name] = sides
    if not merged:
        return ""
    histograms = [side.histogram for sides in merged.values() for side in (sides.query, sides.passage)]
    used = [index for index in range(LENGTH_BINS) if any(histogram[index] for histogram in histograms)]
    bins = range(used[0], used[-1] + 1)
    labels = [_length_label(index) for index in bins]
    top = max(side.histogram[index] / side.count for sides in merged.values()
              for side in (sides.query, sides.passage) for index in bins)

    def chart(stats: LengthStats) -> str:
        return (_columns([stats.histogram[index] for index in bins], stats.count, top, labels)
                + f"<br><small>mean {stats.sum / stats.count:.0f}</small>")

    cards = "".join(
        _card(f"{name}: {sides.query.count} rows", chart(sides.query), chart(sides.passage))
        for name, sides in merged.items()
    )
    return ("<h2>Query and passage lengths (characters)</h2><p class=\"note\">The same bins (powers of two: a"
            " column from its label to the next) and the same scale for every source and side: heights are shares of"
            f" the source's written rows.</p><div class=\"grid\">{cards}</div>")


def _ranks(manifest: Manifest) -> str:
    ranks = Counter()
    for source in manifest.sources.values():
        for by_bin in source.consistency_ranks.values():
            ranks.update(by_bin)
    if not ranks:
        return ""
    labels = [label for label in RANK_BIN_LABELS if label in ranks]
    values = [ranks[label] for label in labels]
    total = sum(values)
    return ("<h2>Consistency ranks (own passage among the pool)</h2>"
            + _columns(values, total, max(values) / total if total else 1.0, labels, column=34))


def _clipped(text) -> str:
    text = "" if text is None else str(text)
    return _e(text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…")


def _rows(heading: str, rows: list[dict], removed: bool) -> str:
    if not rows:
        return ""
    head = ('<col style="width:10%"><col style="width:12%"><col style="width:7%">'
            + ('<col style="width:14%">' if removed else "") + "<col><col>")
    body = "".join(
        f"<tr><td>{_e(row.get(f.SOURCE))}</td><td>{_e(row.get(f.ID) or '-')}</td>"
        f"<td>{_e(row.get(f.QUERY_LANG) or '-')} &rarr; {_e(row.get(f.PASSAGE_LANG) or '-')}</td>"
        + (f"<td>{_e(row.get(r.REASON))}: {_clipped(row.get(r.DETAIL))}</td>" if removed else "")
        + f"<td>{_clipped(row.get(f.QUERY))}</td><td>{_clipped(row.get(f.PASSAGE))}</td></tr>"
        for row in rows
    )
    reason = "<th>reason</th>" if removed else ""
    return (f'<h2>{_e(heading)}</h2><div class="scroll"><table class="wide">{head}<tr><th>source</th><th>id</th><th>langs</th>'
            f"{reason}<th>query</th><th>passage</th></tr>{body}</table></div>")


def _options(options: dict) -> str:
    rows = "".join(
        f"<tr><td>{_e(key)}</td><td><code>{_e(json.dumps(value, ensure_ascii=False))}</code></td></tr>"
        for key, value in sorted(options.items())
    )
    return ('<h2>Options</h2><div class="scroll"><table class="wide"><col style="width:16%"><col>'
            f"<tr><th>option</th><th>value</th></tr>{rows}</table></div>")
