"""``inspect diff``: what changed from one run to another."""

from inspection.summary import rows_per_language
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
    old_languages, new_languages = rows_per_language(old), rows_per_language(new)
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
