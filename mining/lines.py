"""Line splitting with a size limit, so one huge line never fills a worker's memory."""

from dataclasses import dataclass
from typing import BinaryIO, Iterator

CHUNK_BYTES = 1 << 20
KEPT_PREFIX_BYTES = 4096


@dataclass(frozen=True)
class Line:
    number: int  # 1-based
    data: bytes  # without the line break; for an overlong line, its first bytes
    too_long: bool = False


def iter_lines(stream: BinaryIO, max_bytes: int) -> Iterator[Line]:
    """Yield the lines of a binary stream; lines over ``max_bytes`` are flagged, not kept."""
    number = 0
    pending = bytearray()
    overflowed = False
    while chunk := stream.read(CHUNK_BYTES):
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            number += 1
            if overflowed:
                yield Line(number, bytes(pending), too_long=True)
            else:
                pending += chunk[start:end]
                yield _finish(number, pending, max_bytes)
            pending.clear()
            overflowed = False
            start = end + 1
        if not overflowed:
            pending += chunk[start:]
            if len(pending) > max_bytes:
                del pending[KEPT_PREFIX_BYTES:]
                overflowed = True
    if pending or overflowed:
        number += 1
        yield Line(number, bytes(pending), too_long=True) if overflowed else _finish(number, pending, max_bytes)


def _finish(number: int, data: bytearray, max_bytes: int) -> Line:
    if data.endswith(b"\r"):
        del data[-1:]
    if len(data) > max_bytes:
        return Line(number, bytes(data[:KEPT_PREFIX_BYTES]), too_long=True)
    return Line(number, bytes(data))
