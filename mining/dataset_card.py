"""The dataset card of a run: ``README.md`` beside its manifest, with the Hugging Face ``configs:`` that make
``datasets.load_dataset(DIR)`` read the shards (one config per source, and ``default`` for all of them) instead
of guessing a builder from whatever files are most numerous (``rejected/``'s JSON lines)."""

import json
import posixpath

from schemas.manifest import SHARDS_DIR, Manifest


def _config(name: str, pattern: str) -> list[str]:
    return [f"- config_name: {name}", "  data_files:", "  - split: train", f"    path: {pattern}"]


def dataset_card(manifest: Manifest) -> str:
    sources = sorted(name for name, source in manifest.sources.items() if source.output)
    # The shards' own: a split run's options keep its parent's format under ``mined_with``, not as its own.
    extension = posixpath.splitext(manifest.shards[0].path)[1] if manifest.shards else ""
    configs = []
    if sources:
        configs = ["configs:", *_config("default", f"{SHARDS_DIR}/*/*{extension}")]
        for name in sources:
            configs += _config(name, f"{SHARDS_DIR}/{name}/*{extension}")
    totals = manifest.totals
    shard_format = manifest.options.get("shard_format") or manifest.options.get("mined_with", {}).get("shard_format", "stream")
    lines = [
        "---", *configs, "tags:", "- embedmill", "- text-pairs", "---", "",
        f"# {manifest.pipeline} pairs mined by embedmill", "",
        f"{totals.output} rows in {len(manifest.shards)} shards ({shard_format}), from {totals.input} input records "
        f"({sum(totals.dropped.values())} dropped by named reason, {totals.dead_letter} dead-lettered); "
        f"`manifest.json` is the contract: every shard with its rows, bytes and sha256, the counts per source, "
        "language and reason, and the options.", "",
        *(
            ["```python", "from datasets import load_dataset", "",
             'rows = load_dataset("path/to/this/run", split="train")            # every source',
             f'rows = load_dataset("path/to/this/run", "{sources[0]}", split="train")  # one source', "```", ""]
            if sources else ["No rows: there is nothing to load.", ""]
        ),
        "| source | rows | sampling weight | languages |", "|---|---|---|---|",
        *(
            f"| {name} | {manifest.sources[name].output} | {manifest.sources[name].sampling_weight:.4f} | "
            + ", ".join(f"{lang} {n}" for lang, n in sorted(manifest.sources[name].languages.items(), key=lambda i: (-i[1], i[0])))
            + " |"
            for name in sources
        ),
        "", "Columns:", "", "```json", json.dumps(manifest.schema_, indent=2), "```", "",
    ]
    return "\n".join(lines)
