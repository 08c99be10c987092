"""Wikipedia in the Hugging Face ``wikimedia/wikipedia`` layout (Parquet or JSON lines: ``id, url, title, text``).

Articles are split into passages on paragraph boundaries, within their
sections; each passage pairs with ``"{title}: {section heading}"`` (the title
alone before the first heading). An article with no text is one candidate
with an empty passage, dropped by cleaning.
"""

import re
from typing import Iterator

import pyarrow.parquet as pq

from mining.sources import register
from mining.sources.base import CORRUPT_INPUT_ERRORS, JsonLinesReader, optional_text, require_object
from schemas.reasons import UNREADABLE

PASSAGE_CHARS = 1200
MAX_HEADING_CHARS = 80
_SENTENCE_END = re.compile(r"[.!?:;,…。！？：；、)\]»\"]$")
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?。！？])\s+|(?<=[。！？])")


def _is_heading(line: str, next_line: str | None) -> bool:
    return (
        next_line is not None
        and len(line) <= MAX_HEADING_CHARS
        and not _SENTENCE_END.search(line)
        and len(next_line) > len(line)
    )


def sections(text: str) -> Iterator[tuple[str | None, list[str]]]:
    """(heading or None, paragraphs) in article order."""
    lines = [line.strip() for line in text.split("\n")]
    lines = [line for line in lines if line]
    heading, paragraphs = None, []
    for index, line in enumerate(lines):
        following = lines[index + 1] if index + 1 < len(lines) else None
        if _is_heading(line, following):
            if paragraphs:
                yield heading, paragraphs
            heading, paragraphs = line, []
        else:
            paragraphs.append(line)
    if paragraphs:
        yield heading, paragraphs


def passages(paragraphs: list[str], size: int = PASSAGE_CHARS) -> Iterator[str]:
    """Consecutive paragraphs up to ``size`` characters; a longer paragraph is cut between sentences."""
    pieces = (
        piece
        for paragraph in paragraphs
        for piece in ([paragraph] if len(paragraph) <= size else _packed(_SENTENCE_SPLIT.split(paragraph), size, " "))
    )
    return _packed(pieces, size, "\n")


def _packed(pieces, size: int, separator: str) -> Iterator[str]:
    """Consecutive pieces joined by ``separator`` into texts of at most ``size`` characters (a longer piece alone)."""
    current = ""
    for piece in pieces:
        if current and len(current) + len(separator) + len(piece) > size:
            yield current
            current = ""
        current = f"{current}{separator}{piece}" if current else piece
    if current:
        yield current


@register
class WikipediaReader(JsonLinesReader):
    kind = "wikipedia"
    task = "Given a title, retrieve Wikipedia passages about it"

    def parse(self, value, task, origin):
        require_object(value)
        title = optional_text(value, "title")
        text = optional_text(value, "text")
        pairs = [
            self.pair(
                f"{title}: {heading}" if heading else title, passage,
                query_lang=task.lang, passage_lang=task.lang, origin=origin,
            )
            for heading, paragraphs in sections(text)
            for passage in passages(paragraphs)
        ]
        return pairs or self.pair(title, "", query_lang=task.lang, passage_lang=task.lang, origin=origin)

    def read(self, task, open_file, limits):
        for path in task.paths:
            if path.endswith(".parquet"):
                yield from self._read_parquet(task, path, open_file)
            else:
                yield from self._read_file(task, path, open_file, limits)

    def _read_parquet(self, task, path, open_file):
        row = 0
        try:
            with open_file(path) as stream:
                for batch in pq.ParquetFile(stream).iter_batches(batch_size=256, columns=["title", "text"]):
                    for value in batch.to_pylist():
                        row += 1
                        origin = f"{path}:{row}"
                        yield from self.record_items(lambda: self.parse(value, task, origin), path, row, value)
        except (*CORRUPT_INPUT_ERRORS, ValueError) as error:
            yield self.dead_letter(UNREADABLE, f"{type(error).__name__} after row {row}: {error}", path, None, b"")
