"""Translation pairs (NLLB, CCMatrix, Tatoeba...).

Two layouts:
- JSON lines ``{"translation": {"<lang>": text, "<lang>": text}, ...}``, the
  Hugging Face form (codes such as ``deu_Latn`` are normalised);
- line-aligned files in the LASER/Tatoeba layout, ``PREFIX.xxx-yyy.xxx`` and
  ``PREFIX.xxx-yyy.yyy``: the pattern may name the prefix
  (``tatoeba.deu-eng``), glob prefixes (``tatoeba.*-eng``) or the files.
The English side, when there is one, is the passage.
"""

import posixpath
import re
from itertools import zip_longest

from mining import languages
from mining.lines import iter_lines
from mining.sources import register
from mining.sources.base import (
    CORRUPT_INPUT_ERRORS, JsonLinesReader, Malformed, ReadTask, declared_language, require_object,
)
from schemas.reasons import INVALID_UTF8, LINE_TOO_LONG, MISALIGNED, MISSING_FIELD, UNREADABLE, WRONG_TYPE

_ALIGNED_NAME = re.compile(
    r"^(?P<stem>.+)\.(?P<first>[A-Za-z_]{2,12})-(?P<second>[A-Za-z_]{2,12})\.(?P<side>[A-Za-z_]{2,12})"
    r"(?:\.(?:gz|bz2|xz|zst|deflate))?$"
)
_ENGLISH = "en"


def _aligned_parts(path: str) -> re.Match | None:
    match = _ALIGNED_NAME.match(posixpath.basename(path))
    if match and match["side"] in (match["first"], match["second"]):
        return match
    return None


@register
class NllbReader(JsonLinesReader):
    kind = "nllb"
    bilingual = True

    def plan(self, spec, match):
        if spec.lang:
            raise ValueError(f"--source {spec}: translation pairs carry their own languages; drop ':{spec.lang}'")
        paths = match(spec.pattern) or match(spec.pattern + ".*")
        if not paths:
            raise FileNotFoundError(f"--source {spec}: no file matches {spec.pattern!r} or {spec.pattern + '.*'!r}")
        tasks, aligned = [], {}
        for path in sorted(paths):
            parts = _aligned_parts(path)
            if parts is None:
                tasks.append(ReadTask(self.kind, (path,), None))
                continue
            prefix = path[: len(path) - len(posixpath.basename(path))] + parts["stem"]
            key = (prefix, parts["first"], parts["second"])
            aligned.setdefault(key, {})[parts["side"]] = path
        for (prefix, first, second), sides in sorted(aligned.items()):
            if len(sides) != 2:
                raise FileNotFoundError(
                    f"--source {spec}: {next(iter(sides.values()))} has no counterpart "
                    f"{prefix}.{first}-{second}.{first if second in sides else second}"
                )
            for side, path in sorted(sides.items()):
                try:
                    languages.normalize(side)
                except ValueError:
                    raise ValueError(f"--source {spec}: {path}: {side!r} in its name is no language code") from None
            tasks.append(ReadTask(self.kind, (sides[first], sides[second]), None))
        return tasks

    def read(self, task, open_file, limits):
        if len(task.paths) == 2:
            return self._read_aligned(task, open_file, limits)
        return super().read(task, open_file, limits)

    def parse(self, value, task, origin):
        require_object(value)
        translation = value.get("translation")
        if translation is None:
            raise Malformed(MISSING_FIELD, "'translation' missing")
        if not isinstance(translation, dict) or len(translation) != 2:
            raise Malformed(WRONG_TYPE, "'translation' must map exactly two languages to texts")
        sides = []
        for code, text in translation.items():
            if not isinstance(text, str):
                raise Malformed(WRONG_TYPE, f"translation[{code!r}] is {type(text).__name__}, not a string")
            sides.append((declared_language(code, None), text))
        if sides[0][0] == _ENGLISH:
            sides.reverse()
        (query_lang, query), (passage_lang, passage) = sides
        return self.pair(
            query, passage,
            query_lang=query_lang, passage_lang=passage_lang, bilingual=True, origin=origin,
        )

    def _read_aligned(self, task, open_file, limits):
        query_path, passage_path = task.paths
        query_lang = languages.normalize(_aligned_parts(query_path)["side"])
        passage_lang = languages.normalize(_aligned_parts(passage_path)["side"])
        if query_lang == _ENGLISH:
            query_path, passage_path = passage_path, query_path
            query_lang, passage_lang = passage_lang, query_lang
        number = 0
        try:
            with open_file(query_path) as queries, open_file(passage_path) as passages:
                lines = zip_longest(
                    iter_lines(queries, limits.max_line_bytes), iter_lines(passages, limits.max_line_bytes)
                )
                for number, (query, passage) in enumerate(lines, start=1):
                    if query is None or passage is None:
                        present, missing = (passage_path, query_path) if query is None else (query_path, passage_path)
                        data = (passage or query).data
                        yield self.dead_letter(MISALIGNED, f"no line {number} in {missing}", present, number, data)
                        continue
                    yield from self.record_items(
                        lambda: self.pair(
                            _text(query, limits), _text(passage, limits),
                            query_lang=query_lang, passage_lang=passage_lang, bilingual=True,
                            origin=f"{query_path}:{number}",
                        ),
                        query_path, number, query.data + b"\t" + passage.data,
                    )
        except CORRUPT_INPUT_ERRORS as error:
            yield self.dead_letter(UNREADABLE, f"{type(error).__name__} after line {number}: {error}", query_path, None, b"")


def _text(line, limits) -> str:
    if line.too_long:
        raise Malformed(LINE_TOO_LONG, f"line over {limits.max_line_bytes} bytes")
    try:
        return line.data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise Malformed(INVALID_UTF8, str(error)) from None
