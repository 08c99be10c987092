"""``inspect diff``: what changed from one run to another."""

from inspection.summary import language_flow
from schemas.manifest import Manifest


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
    old_languages = {row["language"]: row for row in language_flow(old)}
    new_languages = {row["language"]: row for row in language_flow(new)}
    # A run that did not record language input (a derived run, an older version) is compared on rows written.
    both_recorded = all(
        any(row["input"] is not None for row in rows.values()) for rows in (old_languages, new_languages)
    )
    absent = {"input": 0, "output": 0}
    for lang in sorted(set(old_languages) | set(new_languages)):
        before, after = old_languages.get(lang, absent), new_languages.get(lang, absent)
        if both_recorded:
            _changed(lines, f"language {lang} input", before["input"], after["input"])
        _changed(lines, f"language {lang} rows", before["output"], after["output"])
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
