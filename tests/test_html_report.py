"""``inspect report`` as a data engineer reads it: the figures parsed back out of the page agree with the run,
languages count both sides once per row in the summary, the diff and the report alike, and the page renders in
a real headless Chromium, not blank, within 1400 px."""

import json
import shutil
import subprocess
import zlib
from collections import Counter
from pathlib import Path

import lxml.html
import pyarrow as pa
import pytest

import beam_runner
from inspection.summary import language_flow
from schemas.manifest import ManifestError, parse_manifest
from tests.conftest import write_lines

CHROMIUM = Path("/usr/bin/chromium")
SCRIPT = "<script>alert(1)</script>"
WIDTH = 1400
NLLB_PAIRS = 80  # enough for every stage to see French-English pairs, few enough to keep the run short


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tatoeba_dir) -> Path:
    root = tmp_path_factory.mktemp("html_report")
    long_answer = "Write it as &lt;script&gt; so that the browser shows the tag as text instead of running it."
    write_lines(root / "in" / "qa.jsonl", [
        [f"How do I show {SCRIPT} on a web page?", long_answer],
        ["How long is the Thames?", "The Thames flows for about 346 kilometres to the North Sea."],
        ["How long is the Thames?", "The Thames flows for about 346 kilometres to the North Sea."],
        ["Wie hoch ist der Kölner Dom?", "Der Kölner Dom ist gut 157 Meter hoch und prägt das Stadtbild."],
        ["", "An empty query is dropped by the cleaning stage before language ID sees it."],
        b"{broken",
    ])
    for side in ("fra", "eng"):
        lines = (tatoeba_dir / f"tatoeba.fra-eng.{side}").read_text().splitlines(keepends=True)
        (root / "in" / f"tatoeba.fra-eng.{side}").write_text("".join(lines[:NLLB_PAIRS]))
    output = root / "run"
    sources = [f"sbert={root}/in/qa.jsonl", f"nllb={root}/in/tatoeba.fra-eng"]
    assert beam_runner.main([*(f"--source={s}" for s in sources), f"--output={output}"]) == 0
    return output


@pytest.fixture(scope="module")
def manifest(run_dir):
    return parse_manifest((run_dir / "manifest.json").read_text())


@pytest.fixture(scope="module")
def page(run_dir, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("html_page") / "report.html"
    assert beam_runner.main(["inspect", "report", str(run_dir), "--html", str(target)]) == 0
    return target


def _written_languages(run_dir: Path, manifest) -> tuple[Counter, Counter]:
    """From the shards themselves: rows per language on either side (once per row), and per language pair."""
    either_side, pairs = Counter(), Counter()
    for shard in manifest.shards:
        with pa.ipc.open_stream(pa.OSFile(str(run_dir / shard.path))) as reader:
            for row in reader.read_all().select(["query_lang", "passage_lang"]).to_pylist():
                either_side.update({row["query_lang"], row["passage_lang"]})
                pairs[row["query_lang"], row["passage_lang"]] += 1
    return either_side, pairs


def test_languages_count_both_sides_once_per_row_everywhere(run_dir, manifest, tmp_path, capsys):
    either_side, _ = _written_languages(run_dir, manifest)
    flow = {row["language"]: row for row in language_flow(manifest)}
    # English: the passage of every French-English pair and both sides of the English QA rows, each row once.
    assert {lang: row["output"] for lang, row in flow.items() if row["output"]} == dict(either_side)
    assert flow["en"]["output"] > flow["fr"]["output"] >= NLLB_PAIRS - 5
    for row in flow.values():
        assert row["output"] <= row["input"] and row["kept"] == pytest.approx(row["output"] / row["input"], abs=1e-4)
    # Rows reaching language ID: all records but the dead letter and those the earlier stages dropped.
    reached = manifest.totals.input - manifest.totals.dead_letter - sum(
        n for reason, n in manifest.totals.dropped.items() if reason in ("empty_side", "identical_sides", "too_long"))
    assert max(row["input"] for row in flow.values()) <= reached

    assert beam_runner.main(["inspect", "summary", str(run_dir), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert {row["language"]: (row["input"], row["output"]) for row in summary["languages"]} == {
        lang: (row["input"], row["output"]) for lang, row in flow.items()}

    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    document = json.loads((other / "manifest.json").read_text())
    document["sources"]["nllb"]["language_input"]["en"] += 5
    (other / "manifest.json").write_text(json.dumps(document))
    assert beam_runner.main(["inspect", "diff", str(run_dir), str(other)]) == 0
    changes = capsys.readouterr().out
    assert f"language en input: {flow['en']['input']} -> {flow['en']['input'] + 5} (+5)" in changes

    # A run of an older version recorded no language input: compared on rows written only.
    for source in document["sources"].values():
        del source["language_input"], source["lid_scores"]
    (other / "manifest.json").write_text(json.dumps(document))
    assert beam_runner.main(["inspect", "diff", str(run_dir), str(other)]) == 0
    assert "input" not in capsys.readouterr().out


def test_report_figures_parse_back_to_the_run(run_dir, manifest, page):
    tree = lxml.html.fromstring(page.read_bytes())
    tables = {table.xpath("preceding::h2[1]")[0].text_content(): table for table in tree.iter("table")}

    def cells(table) -> list[list[str]]:
        return [[cell.text_content().strip() for cell in row] for row in table.iter("tr")]

    funnel = cells(tables["Funnel"])
    assert funnel[1][0] == "input" and int(funnel[1][5]) == manifest.totals.input
    stages = [row[0] for row in funnel[2:-1]]
    assert stages[:6] == ["read", "clean", "decontaminate", "language_id", "dedup", "near_dup"]
    removed = sum(int(row[2]) for row in funnel[2:-1])
    assert funnel[-1][0] == "written" and int(funnel[-1][5]) == manifest.totals.output
    assert removed == sum(manifest.totals.dropped.values()) + manifest.totals.dead_letter
    clean = next(row for row in funnel if row[0] == "clean")
    assert clean[2] == "1" and clean[3] == f"{1 / int(clean[1]):.1%}"

    reasons = cells(tables["Drop reasons, by stage and source"])
    header = reasons[0]
    assert header[:3] == ["reason", "all", "of input"] and header[3:] == sorted(manifest.sources)
    grouped, stage = {}, None
    for row in reasons[1:]:
        if len(row) == 1:
            stage = row[0]
        else:
            grouped[row[0]] = (stage, dict(zip(header[3:], row[3:])))
    assert grouped["duplicate_pair"][0] == "dedup" and grouped["duplicate_pair"][1]["sbert"] == "1"
    assert grouped["empty_side"][0] == "clean" and grouped["dead letters"] == ("read", {"nllb": ".", "sbert": "1"})

    languages = {row[0]: row[1:4] for row in cells(tables["Languages, input \u2192 written"])[1:]}
    expected = {row["language"]: [str(row["input"]), str(row["output"]), f"{row['kept']:.1%}"]
                for row in language_flow(manifest)}
    assert languages == expected and int(languages["en"][1]) > int(languages["fr"][1])

    _, pairs = _written_languages(run_dir, manifest)
    matrix = cells(tables["Query language \u00d7 passage language (written rows)"])
    columns = matrix[0][1:-1]
    assert matrix[-1][-1] == str(manifest.totals.output)
    assert matrix[1 + columns.index("fr")][1 + columns.index("en")] == str(pairs["fr", "en"])

    text = tree.text_content()
    # The cleaning stage strips tags and decodes entities: the written passage holds a literal <script>.
    assert not tree.xpath("//script") and "Write it as <script> so that" in text
    rejected = cells(tables["Rejected rows (from rejected/, a few per reason)"])
    assert any(row[3].startswith("duplicate_pair") and "Thames" in row[4] for row in rejected[1:])
    assert "lid_threshold" in [row[0] for row in cells(tables["Options"])]


def test_manifest_refuses_language_figures_that_disagree(run_dir):
    text = (run_dir / "manifest.json").read_text()
    document = json.loads(text)
    document["sources"]["nllb"]["language_input"]["fr"] = 3
    with pytest.raises(ManifestError, match=r"sources\.nllb: languages\.fr \d+ > language_input\.fr 3"):
        parse_manifest(json.dumps(document))
    document = json.loads(text)
    shard = next(shard for shard in document["shards"] if shard["source"] == "nllb")
    shard["language_pairs"]["fr"]["en"] -= 1
    shard["language_pairs"].setdefault("en", {})["en"] = 1
    with pytest.raises(ManifestError, match="languages are not those of language_pairs"):
        parse_manifest(json.dumps(document))


def _png_pixels(png: bytes) -> tuple[int, int, bytes]:
    """Width, height and the filtered scanlines of a PNG (enough to tell a blank page: every byte alike)."""
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    offset, data, width, height = 8, b"", 0, 0
    while offset < len(png):
        length = int.from_bytes(png[offset: offset + 4], "big")
        kind, body = png[offset + 4: offset + 8], png[offset + 8: offset + 8 + length]
        if kind == b"IHDR":
            width, height = int.from_bytes(body[:4], "big"), int.from_bytes(body[4:8], "big")
        elif kind == b"IDAT":
            data += body
        offset += 12 + length
    return width, height, zlib.decompress(data)


def _chromium(tmp_path: Path, *args: str) -> str:
    done = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={WIDTH},1000", *args],
        check=True, capture_output=True, text=True, timeout=120,
    )
    return done.stdout


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (Debian package 'chromium')")
def test_report_renders_and_fits_1400_pixels(page, tmp_path):
    screenshot = tmp_path / "report.png"
    _chromium(tmp_path, f"--screenshot={screenshot}", page.as_uri())
    width, height, pixels = _png_pixels(screenshot.read_bytes())
    assert (width, height) == (WIDTH, 1000)
    assert len(set(pixels)) > 16, "a blank page has one colour"
    # The page itself has no script: a copy measures how wide it lays out, and writes that into its DOM.
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", """<script>
document.body.dataset.scrollWidth = document.documentElement.scrollWidth;
document.body.dataset.widest = Math.max(...[...document.querySelectorAll("table")].map(t => t.offsetWidth));
</script></body>"""))
    body = lxml.html.fromstring(_chromium(tmp_path, "--dump-dom", probe.as_uri())).body
    assert int(body.get("data-scroll-width")) <= WIDTH, "the page never scrolls sideways"
    assert int(body.get("data-widest")) > 0.8 * WIDTH, "the page uses its width"
