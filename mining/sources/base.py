"""What every source reader shares: specs, read tasks, JSON-lines parsing, dead letters."""

import codecs
import json
import lzma
import re
import zlib
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, ClassVar, Iterable, Iterator

import orjson
import zstandard

from mining import languages
from mining.lines import CHUNK_BYTES, KEPT_PREFIX_BYTES, iter_lines
from mining.records import DeadLetter, Drop, new_pair
from schemas.pairs import TEACHER_SCORE_LIMIT
from schemas.reasons import (
    INVALID_JSON, INVALID_LANGUAGE, INVALID_UTF8, LINE_TOO_LONG, MISSING_FIELD, READER_ERROR, TRUNCATED_JSON,
    UNREADABLE, WRONG_TYPE,
)

# What a damaged or truncated compressed file raises while being read.
CORRUPT_INPUT_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError, zstandard.ZstdError)

_UTF8_BOM = b"\xef\xbb\xbf"
_JSON_DECODER = json.JSONDecoder()
_JSON_WHITESPACE = re.compile(r"[ \t\n\r]*")
# A JSON error this close to the end of what is buffered may be the buffer's end cutting a
# literal (``-Infinity`` is the longest), not bad JSON: more of the file decides.
_LONGEST_LITERAL = len("-Infinity")
_SPEC = re.compile(r"^(?P<kind>[a-z0-9_]+)(?::(?P<lang>[A-Za-z_-]+))?=(?P<pattern>.+)$")

OpenFile = Callable[[str], BinaryIO]
MatchFiles = Callable[[str], list[str]]


@dataclass(frozen=True)
class SourceSpec:
    """``KIND[:LANG]=PATTERN`` from the command line."""

    kind: str
    lang: str | None
    pattern: str

    @classmethod
    def parse(cls, text: str) -> "SourceSpec":
        match = _SPEC.match(text)
        if not match:
            raise ValueError(f"--source must be KIND[:LANG]=PATTERN, got {text!r}")
        lang = match["lang"] and languages.normalize(match["lang"])
        return cls(match["kind"], lang, match["pattern"])

    def __str__(self) -> str:
        lang = f":{self.lang}" if self.lang else ""
        return f"{self.kind}{lang}={self.pattern}"


@dataclass(frozen=True)
class ReadTask:
    """One unit of reading: a file, or files that are read together."""

    kind: str
    paths: tuple[str, ...]
    lang: str | None
    # The --source it comes from: files of one source may join each other.
    spec: str = ""


@dataclass(frozen=True)
class ReadLimits:
    max_line_bytes: int = 1 << 20


class Malformed(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class TextLine:
    number: int
    text: str
    data: bytes


@dataclass(frozen=True)
class JoinPart:
    """A record that becomes a pair only together with others (a reply and its parent,
    a question and its answers): grouped by (kind, key) through a shuffle, then joined.
    """

    key: str
    role: str
    value: dict
    round: int = 0


class SourceReader:
    """Turns one kind of input file into pair records and dead letters.

    The funnel's unit is the pair candidate: ``read`` yields one pair record per
    candidate (a line with several positives yields several), a Drop for a
    candidate that a rule of the source rejects, or a DeadLetter per record it
    cannot parse.
    """

    kind: ClassVar[str]
    # Translation pairs: each side keeps its own language.
    bilingual: ClassVar[bool] = False
    # Whether the same passage twice in one source is a duplicate by default
    # (not for QA sets, where one passage answers many questions).
    passage_dedup: ClassVar[bool] = True
    # Shuffle rounds the source needs to join its records (JoiningReader).
    join_rounds: ClassVar[int] = 0
    # The instruction fine-tuning rows carry when a record names none.
    task: ClassVar[str] = "Retrieve semantically similar text"

    def plan(self, spec: SourceSpec, match: MatchFiles) -> list[ReadTask]:
        paths = match(spec.pattern)
        if not paths:
            raise FileNotFoundError(f"--source {spec}: no file matches {spec.pattern!r}")
        return [ReadTask(self.kind, (path,), spec.lang, str(spec)) for path in sorted(paths)]

    def read(self, task: ReadTask, open_file: OpenFile, limits: ReadLimits) -> Iterator[dict | Drop | DeadLetter]:
        raise NotImplementedError

    def pair(self, query: str, passage: str, *, task: str | None = None, **fields) -> dict:
        return new_pair(self.kind, query, passage, task=task or self.task, **fields)

    def dead_letter(self, reason: str, detail: str, path: str, line: int | None, payload) -> DeadLetter:
        return DeadLetter.of(reason, detail, self.kind, path, line, payload)

    def record_items(self, parse: Callable[[], Any], path: str, line: int | None, payload) -> list:
        """What ``parse()`` makes of one input record (an item, a list or an iterator of them),
        as a list; one dead letter instead when it raises: Malformed's reason, or READER_ERROR
        naming any other exception, so that no record can end a run."""
        try:
            parsed = parse()
            return list(parsed) if isinstance(parsed, Iterator) else as_items(parsed)
        except Malformed as error:
            return [self.dead_letter(error.reason, error.detail, path, line, payload)]
        except Exception as error:  # noqa: BLE001  the record, not the run, pays for what nobody foresaw
            return [self.dead_letter(READER_ERROR, describe(error), path, line, payload)]

    def read_all(self, task: ReadTask, open_file: OpenFile, limits: ReadLimits) -> Iterator[dict | Drop | DeadLetter]:
        """``read``, where an exception outside any one record's code (a reader's file handling)
        ends only the task: what was read stays, the rest of it is one READER_ERROR dead letter."""
        count = 0
        try:
            for item in self.read(task, open_file, limits):
                count += 1
                yield item
        except Exception as error:  # noqa: BLE001  see record_items
            detail = f"{describe(error)} after {count} item(s)"
            yield self.dead_letter(READER_ERROR, detail, ", ".join(task.paths), None, b"")

    def text_lines(self, path: str, open_file: OpenFile, limits: ReadLimits) -> Iterator["TextLine | DeadLetter"]:
        """A file's decoded lines, blank ones included; an overlong or undecodable line, and
        the rest of a file that turns out corrupt, as dead letters (what was read stays)."""
        number = 0
        try:
            with open_file(path) as stream:
                for line in iter_lines(stream, limits.max_line_bytes):
                    number = line.number
                    data = line.data
                    if number == 1 and data.startswith(_UTF8_BOM):
                        data = data[len(_UTF8_BOM) :]
                    if line.too_long:
                        yield self.dead_letter(LINE_TOO_LONG, f"over {limits.max_line_bytes} bytes", path, number, data)
                        continue
                    try:
                        yield TextLine(number, data.decode("utf-8"), data)
                    except UnicodeDecodeError as error:
                        yield self.dead_letter(INVALID_UTF8, str(error), path, number, data)
        except CORRUPT_INPUT_ERRORS as error:
            detail = f"{type(error).__name__} after line {number}: {error}"
            yield self.dead_letter(UNREADABLE, detail, path, None, b"")

    def tsv_rows(
        self, path: str, open_file: OpenFile, limits: ReadLimits
    ) -> Iterator["tuple[TextLine, dict] | DeadLetter"]:
        """Each line after a TSV file's header row with the row as {column: field}; a line whose
        field count is not the header's, and what ``text_lines`` rejects, as dead letters."""
        header = None
        for line in self.text_lines(path, open_file, limits):
            if isinstance(line, DeadLetter):
                yield line
                continue
            fields = line.text.split("\t")
            if header is None:
                header = fields
            elif len(fields) != len(header):
                detail = f"{len(fields)} fields where the header has {len(header)}"
                yield self.dead_letter(WRONG_TYPE, detail, path, line.number, line.data)
            else:
                yield line, dict(zip(header, fields))

    def line_records(self, path: str, open_file: OpenFile, limits: ReadLimits, parse: Callable[[str, str], Any]):
        """What ``parse(text, origin)`` makes of each non-blank line of ``path``; a line ``text_lines`` rejects,
        or one ``parse`` refuses, as a dead letter."""
        for line in self.text_lines(path, open_file, limits):
            if isinstance(line, DeadLetter):
                yield line
            elif line.text.strip():
                origin = f"{path}:{line.number}"
                yield from self.record_items(lambda: parse(line.text, origin), path, line.number, line.data)

    def row_records(self, path: str, open_file: OpenFile, limits: ReadLimits, parse: Callable[[dict, str], Any]):
        """What ``parse(row, origin)`` makes of each row of a TSV file with a header (``tsv_rows``)."""
        for item in self.tsv_rows(path, open_file, limits):
            if isinstance(item, DeadLetter):
                yield item
                continue
            line, row = item
            origin = f"{path}:{line.number}"
            yield from self.record_items(lambda: parse(row, origin), path, line.number, line.data)

    def array_records(self, path: str, open_file: OpenFile, limits: ReadLimits, parse: Callable[[Any, str], Any]):
        """What ``parse(element, origin)`` makes of each element of a file that is one JSON array, decoded one
        element at a time, so that a file of gigabytes (DPR's) never sits in memory whole. An element over
        ``limits.max_line_bytes`` characters is a dead letter. Bad JSON, a corrupt archive or an
        element that does not end within the limit ends the file: an array cannot be picked up
        again mid-way, so its remainder is one dead letter (what was read stays)."""
        count = 0
        try:
            with open_file(path) as stream:
                for value in _JsonArrayStream(stream, limits.max_line_bytes):
                    if isinstance(value, _RefusedElement):
                        detail = f"element {count}: {value.error.detail}"
                        yield self.dead_letter(value.error.reason, detail, path, None, value.text)
                    else:
                        origin = f"{path}:[{count}]"
                        yield from self.record_items(lambda: parse(value, origin), path, None, value)
                    count += 1
        except Malformed as error:
            yield self.dead_letter(error.reason, f"at element {count}: {error.detail}", path, None, b"")
        except CORRUPT_INPUT_ERRORS as error:
            yield self.dead_letter(UNREADABLE, f"{describe(error)} at element {count}", path, None, b"")


@dataclass(frozen=True)
class _RefusedElement:
    """An array element that is no record, and its text (the start of it, for one too long)."""

    error: Malformed
    text: str


class _JsonArrayStream:
    """The elements of a JSON array read from a binary stream, a chunk at a time; a _RefusedElement
    in place of one over ``max_chars`` characters or one that orjson refuses."""

    def __init__(self, stream: BinaryIO, max_chars: int):
        self._stream = stream
        self._max_chars = max_chars
        self._utf8 = codecs.getincrementaldecoder("utf-8-sig")()
        self._text = ""
        self._position = 0
        self._at_end = False

    def __iter__(self) -> Iterator[Any]:
        if self._next_char() != "[":
            raise Malformed(WRONG_TYPE, "the file is not a JSON array")
        if self._next_char(consume=False) == "]":
            return
        while True:
            yield self._value()
            separator = self._next_char()
            if separator == "]":
                return
            if separator != ",":
                reason = TRUNCATED_JSON if separator == "" else INVALID_JSON
                raise Malformed(reason, f"expected ',' or ']' between elements, got {separator!r}")

    def _read_more(self) -> bool:
        """Appends the next chunk; False at the end of the stream."""
        if self._at_end:
            return False
        chunk = self._stream.read(CHUNK_BYTES)
        self._at_end = not chunk
        try:
            text = self._utf8.decode(chunk, final=self._at_end)
        except UnicodeDecodeError as error:
            raise Malformed(INVALID_UTF8, str(error)) from None
        self._text = self._text[self._position :] + text
        self._position = 0
        return True

    def _next_char(self, consume: bool = True) -> str:
        """The next character that is not whitespace; "" at the end of the stream."""
        while True:
            self._position = _JSON_WHITESPACE.match(self._text, self._position).end()
            if self._position < len(self._text):
                char = self._text[self._position]
                if consume:
                    self._position += 1
                return char
            if not self._read_more():
                return ""

    def _value(self) -> Any:
        """The next element, as ``decode_json`` (orjson, what every other reader parses with) reads its
        text; the standard library's decoder only finds where it ends."""
        self._next_char(consume=False)  # raw_decode takes no leading whitespace
        while True:
            try:
                _, end = _JSON_DECODER.raw_decode(self._text, self._position)
                # A value that ends where the buffer does (a number) may go on in the next chunk.
                if end < len(self._text) or self._at_end:
                    start, self._position = self._position, end
                    if end - start > self._max_chars:
                        error = Malformed(LINE_TOO_LONG, f"over {self._max_chars} characters")
                        return _RefusedElement(error, self._text[start : start + KEPT_PREFIX_BYTES])
                    try:
                        return decode_json(self._text[start:end])
                    except Malformed as error:
                        return _RefusedElement(error, self._text[start:end])
            except json.JSONDecodeError as error:
                cut_by_buffer = error.pos + _LONGEST_LITERAL >= len(self._text) or error.msg.startswith("Unterminated")
                if not cut_by_buffer:
                    raise Malformed(INVALID_JSON, str(error)) from None
                if self._at_end:
                    raise Malformed(TRUNCATED_JSON, str(error)) from None
            except (ValueError, RecursionError) as error:  # an integer of over 4300 digits, nesting too deep
                raise Malformed(INVALID_JSON, describe(error)) from None
            if len(self._text) - self._position > self._max_chars:
                raise Malformed(LINE_TOO_LONG, f"does not end within {self._max_chars} characters")
            self._read_more()


class JsonLinesReader(SourceReader):
    """One JSON value per line; blank lines are not records."""

    def parse(self, value, task: ReadTask, origin: str) -> dict | Drop | JoinPart | list:
        """The pair(s) in ``value`` (a list for several); raises Malformed."""
        raise NotImplementedError

    def read(self, task, open_file, limits):
        for path in task.paths:
            yield from self._read_file(task, path, open_file, limits)

    def _read_file(self, task, path, open_file, limits):
        yield from self.line_records(
            path, open_file, limits, lambda text, origin: self.parse(decode_json(text), task, origin)
        )


def describe(error: Exception) -> str:
    """An unforeseen exception as a dead letter's detail: its type, then its message."""
    return f"{type(error).__name__}: {error}"


def as_items(parsed) -> list:
    """What ``parse`` returned, as a list."""
    return parsed if isinstance(parsed, list) else [parsed]


def decode_json(text: str | bytes):
    """One JSON value; Malformed when it is none."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise Malformed(INVALID_JSON, str(error)) from None


def _at(where: str) -> str:
    """What a field check says first: the part of a nested document it looked at, if any."""
    return f"{where}: " if where else ""


def require_object(value, where: str = "") -> dict:
    """``value`` if it is a JSON object; Malformed otherwise."""
    if not isinstance(value, dict):
        raise Malformed(WRONG_TYPE, f"{_at(where)}expected a JSON object, got {type(value).__name__}")
    return value


def require_list(obj: dict, key: str, where: str = "") -> list:
    """``obj[key]``, which must be a JSON array."""
    value = obj.get(key)
    if value is None:
        raise Malformed(MISSING_FIELD, f"{_at(where)}{key!r} missing")
    if not isinstance(value, list):
        raise Malformed(WRONG_TYPE, f"{_at(where)}{key!r} is {type(value).__name__}, not a list")
    return value


def require_text(obj: dict, *keys: str, where: str = "") -> str:
    """The first of ``keys`` present in ``obj``, which must be a string."""
    for key in keys:
        if key in obj and obj[key] is not None:
            value = obj[key]
            if not isinstance(value, str):
                raise Malformed(WRONG_TYPE, f"{_at(where)}{key!r} is {type(value).__name__}, not a string")
            return value
    raise Malformed(MISSING_FIELD, _at(where) + " or ".join(repr(key) for key in keys) + " missing")


def require_text_list(obj: dict, key: str, minimum: int = 0) -> list[str]:
    """``obj[key]``, a list of at least ``minimum`` strings; an absent key is an empty list."""
    items = obj.get(key, [])
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise Malformed(WRONG_TYPE, f"{key!r} must be a list of strings")
    if len(items) < minimum:
        raise Malformed(MISSING_FIELD, f"{key!r} needs at least {minimum} item(s), has {len(items)}")
    return items


def optional_score_list(obj: dict, key: str, length: int) -> list[float] | None:
    """``obj[key]``, a list of ``length`` finite JSON numbers (not booleans), as floats; None where the key is absent."""
    items = obj.get(key)
    if items is None:
        return None
    if not isinstance(items, list) or not all(
        isinstance(item, (int, float)) and not isinstance(item, bool) and abs(item) <= TEACHER_SCORE_LIMIT
        for item in items
    ):
        raise Malformed(WRONG_TYPE, f"{key!r} must be a list of numbers a float32 holds")
    if len(items) != length:
        raise Malformed(MISSING_FIELD, f"{key!r} has {len(items)} score(s) for {length} text(s)")
    return [float(item) for item in items]


def require_integer(obj: dict, key: str, default: int | None = None) -> int:
    """``obj[key]``, a JSON integer (not a boolean); ``default``, if given, where the key is absent."""
    value = obj.get(key, default)
    if value is None:
        raise Malformed(MISSING_FIELD, f"{key!r} missing")
    if not isinstance(value, int) or isinstance(value, bool):
        raise Malformed(WRONG_TYPE, f"{key!r} is {type(value).__name__}, not int")
    return value


def language_from_path(path: str) -> str | None:
    """A two-letter language code naming the file's folder (``xP3/fr/...``, ``ru.stackoverflow.com/...``)."""
    folder = path.rstrip("/").rsplit("/", 2)[-2] if "/" in path else ""
    label = folder.split(".", 1)[0].lower()
    if len(label) == 2 and languages.is_known(label):
        return languages.normalize(label)
    return None


def optional_text(obj: dict, *keys: str) -> str:
    """The first of ``keys`` holding a string; "" where none holds anything."""
    for key in keys:
        value = obj.get(key)
        if value is not None:
            if not isinstance(value, str):
                raise Malformed(WRONG_TYPE, f"{key!r} is {type(value).__name__}, not a string")
            return value
    return ""


def declared_language(
    value, fallback: str | None, normalize: Callable[[str], str] = languages.normalize
) -> str | None:
    """The language a record names, by ``normalize`` (which raises ValueError for no language)."""
    if value is None:
        return fallback
    if not isinstance(value, str):
        raise Malformed(WRONG_TYPE, f"language is {type(value).__name__}, not a string")
    try:
        return normalize(value)
    except ValueError as error:
        raise Malformed(INVALID_LANGUAGE, str(error)) from None


class JoiningReader(SourceReader):
    """A source whose pairs join records through shuffles.

    ``read`` also yields JoinParts. Round ``r`` groups the parts by key and calls
    ``join(r, key, parts)``, which yields, for every pair candidate it decides, a
    pair record or a Drop, and JoinParts for round ``r + 1``. Records that only
    give context (a thread's submission, a question's answers) are not
    candidates. A group holds one key's parts: a parent and its direct children.
    A part joins in the round its ``round`` names, so a reader can hold parts
    back for a later round's key.
    """

    join_rounds = 1

    def join(self, round_index: int, key: str, parts: Iterable[JoinPart]) -> Iterator[dict | Drop | JoinPart]:
        raise NotImplementedError

    def join_items(self, round_index: int, key: str, parts: Iterable[JoinPart]) -> list:
        """``join`` as a list; one READER_ERROR dead letter holding the group's parts instead when it
        raises, so that no group can end a run (nothing of a failed group goes on)."""
        parts = list(parts)
        try:
            return list(self.join(round_index, key, parts))
        except Exception as error:  # noqa: BLE001  see SourceReader.record_items
            origins = (str(part.value.get("origin", "")) for part in parts if isinstance(part.value, dict))
            first = min(origins, default="")
            payload = [(part.role, part.value) for part in parts]
            detail = f"{describe(error)} joining {key!r}"
            return [self.dead_letter(READER_ERROR, detail, first.rsplit(":", 1)[0], None, payload)]
