"""File access through Beam's FileSystems, so gs:// paths work like local ones."""

import bz2
import contextlib
import gzip
import hashlib
import io
import lzma
import os
import posixpath
import shutil
import tempfile
import uuid
from typing import BinaryIO, Iterator

import zstandard

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from schemas.manifest import DEAD_LETTER_DIR, MANIFEST_NAME, REJECTED_DIR, SHARDS_DIR


def match_files(pattern: str) -> list[str]:
    """Paths matching a glob, sorted; none for a pattern that matches nothing."""
    (result,) = FileSystems.match([pattern])
    return sorted(metadata.path for metadata in result.metadata_list)


class ZstdReader(io.RawIOBase):
    """Zstandard frames one after another, as Pushshift's dumps come (2 GiB windows).

    zstandard's stream_reader ends quietly on a truncated file; this raises.
    """

    def __init__(self, raw: BinaryIO):
        self._raw = raw
        self._decompressor = zstandard.ZstdDecompressor(max_window_size=2**31)
        self._frame = None
        self._pending = bytearray()
        self._done = False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while not self._done and (size < 0 or len(self._pending) < size):
            self._decompress_chunk()
        if size < 0:
            size = len(self._pending)
        data = bytes(self._pending[:size])
        del self._pending[:size]
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _decompress_chunk(self) -> None:
        chunk = self._raw.read(1 << 20)
        if not chunk:
            if self._frame is not None and not self._frame.eof:
                raise EOFError("zstd data ends inside a frame: the file is truncated")
            self._done = True
            return
        while chunk:
            if self._frame is None or self._frame.eof:
                self._frame = self._decompressor.decompressobj()
            self._pending += self._frame.decompress(chunk)
            chunk = self._frame.unused_data if self._frame.eof else b""


# Python's own decompressors, which raise on a truncated file where Beam's
# CompressedFile would end quietly and lose the rest without a trace.
_DECOMPRESSORS = {
    ".gz": lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"),
    ".bz2": bz2.BZ2File,
    ".xz": lzma.LZMAFile,
    ".lzma": lzma.LZMAFile,
    ".zst": ZstdReader,
}


@contextlib.contextmanager
def open_file(path: str) -> Iterator[BinaryIO]:
    """A binary stream, decompressed according to the extension (.gz, .bz2, .xz, .zst)."""
    decompressor = _DECOMPRESSORS.get(posixpath.splitext(path)[1].lower())
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
        if decompressor is None:
            yield raw
        else:
            with decompressor(raw) as stream:
                yield stream


def join(base: str, *parts: str) -> str:
    return FileSystems.join(base, *parts)


# Object stores publish an object only when its upload completes.
_ATOMIC_UPLOAD_SCHEMES = ("gs", "s3", "azfs")


def write_atomically(path: str, data: bytes) -> None:
    """Write so no reader ever sees a partial file: in an object store, one upload;
    on a file system, beside the destination under a hidden name, then a rename."""
    if FileSystems.get_scheme(path) in _ATOMIC_UPLOAD_SCHEMES:
        with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
            stream.write(data)
        return
    directory, name = posixpath.split(path)
    temporary = FileSystems.join(directory, f".{name}.tmp-{uuid.uuid4().hex}")
    with FileSystems.create(temporary, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
        stream.write(data)
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([temporary], [path])


def read_bytes(path: str) -> bytes:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
        return stream.read()


def local_copy(path: str) -> str:
    """A local path for a file that may be remote (model files), fetched once per machine.

    Every DoFn instance and worker process on a machine shares the copy: it is
    downloaded under a temporary name and renamed into place, so a reader never
    sees half a file.
    """
    if FileSystems.get_scheme(path) in (None, "file"):
        return path
    digest = hashlib.sha256(path.encode("utf-8")).hexdigest()[:16]
    local = os.path.join(tempfile.gettempdir(), "embedmill-models", digest, posixpath.basename(path))
    if not os.path.exists(local):
        os.makedirs(os.path.dirname(local), exist_ok=True)
        partial = f"{local}.{uuid.uuid4().hex}.partial"
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as remote, open(partial, "wb") as out:
            shutil.copyfileobj(remote, out, 1 << 20)
        os.replace(partial, local)
    return local


def prepare_output(output: str, overwrite: bool) -> None:
    """Make ``output`` ready for a run: empty, or (with ``overwrite``) holding only what a run
    writes, which is deleted. Files a run did not write are never touched."""
    ours = (SHARDS_DIR, DEAD_LETTER_DIR, REJECTED_DIR, MANIFEST_NAME, f".{MANIFEST_NAME}.tmp-")
    prefix = output.rstrip("/") + "/"
    present = {path[len(prefix) :].split("/", 1)[0] for path in match_files(join(output, "**"))}
    strangers = sorted(name for name in present if not name.startswith(ours))
    if strangers:
        raise FileExistsError(
            f"--output {output} holds files a mining run did not write ({', '.join(strangers[:5])}); "
            "choose another directory"
        )
    if present and not overwrite:
        raise FileExistsError(f"--output {output} holds an earlier run; add --overwrite to replace it")
    if present:
        FileSystems.delete([join(output, name) for name in sorted(present)])
