import io

import pytest

from mining import lines
from mining.lines import iter_lines


@pytest.mark.parametrize("chunk_bytes", [1, 3, 7, 1 << 20])
def test_lines_split_on_any_chunk_boundary(monkeypatch, chunk_bytes):
    monkeypatch.setattr(lines, "CHUNK_BYTES", chunk_bytes)
    data = b"first\r\n" + b"x" * 40 + b"\n\nthe last line, without a newline"
    got = list(iter_lines(io.BytesIO(data), max_bytes=20))
    assert [(line.number, line.too_long) for line in got] == [(1, False), (2, True), (3, False), (4, True)]
    assert got[0].data == b"first"
    assert got[2].data == b""
    assert got[1].data.startswith(b"xxxx")


def test_overlong_line_keeps_only_a_prefix():
    data = b"a" * (lines.KEPT_PREFIX_BYTES * 3) + b"\nok\n"
    first, second = iter_lines(io.BytesIO(data), max_bytes=100)
    assert first.too_long and len(first.data) <= lines.KEPT_PREFIX_BYTES + lines.CHUNK_BYTES
    assert second == lines.Line(2, b"ok")


def test_trailing_newline_makes_no_extra_line():
    assert [line.data for line in iter_lines(io.BytesIO(b"a\nb\n"), 10)] == [b"a", b"b"]
