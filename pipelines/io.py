"""File access through Beam's FileSystems, so gs:// paths work like local ones."""

import bz2
import contextlib
import functools
import hashlib
import io
import json
import lzma
import os
import posixpath
import re
import shutil
import tempfile
import uuid
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator

import zstandard

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from schemas.manifest import (
    DATASET_CARD, DEAD_LETTER_DIR, GENERATIONS_DIR, LLM_CACHE_DIR, MANIFEST_NAME, REJECTED_DIR, SHARDS_DIR,
)


def match_files(pattern: str) -> list[str]:
    """Paths matching a glob, sorted; none for a pattern that matches nothing."""
    (result,) = FileSystems.match([pattern])
    return sorted(metadata.path for metadata in result.metadata_list)


# Compressed bytes read from the file at a time.
_COMPRESSED_CHUNK_BYTES = 1 << 16
# Bytes decompressed at a time. A decompressor that meets damage drops what it made in that
# call: steps of a fixed size make that loss small, and the same whatever size a reader asks for.
_DECOMPRESSED_STEP_BYTES = 1 << 16
# The most memory a decoder may keep as window or dictionary: zstd --long=31, as
# Pushshift's dumps need; xz's largest preset needs 65 MiB.
_MAX_WINDOW_BYTES = 2**31
# Compressed bytes fed to zstd at a time: a 4-byte RLE block expands to 128 KiB,
# so a slice expands to at most 4 MiB, whatever the file holds.
_ZSTD_SLICE_BYTES = 128


class _GzipMember:
    """One gzip member through zlib, behind the interface of bz2's and lzma's decompressors."""

    def __init__(self):
        self._inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # with gzip's header and trailer
        self.needs_input = True

    def decompress(self, data: bytes, max_length: int) -> bytes:
        output = self._inflate.decompress(self._inflate.unconsumed_tail + data, max_length)
        # Output that fills max_length may leave more inside zlib, even with no input left.
        self.needs_input = not self._inflate.unconsumed_tail and len(output) < max_length
        return output

    @property
    def eof(self) -> bool:
        return self._inflate.eof

    @property
    def unused_data(self) -> bytes:
        return self._inflate.unused_data


class _ZstdFrame:
    """One zstd frame (2 GiB windows, as Pushshift's dumps use), behind the interface of
    bz2's and lzma's decompressors; it takes input only when it ``needs_input``.

    zstandard's decompressobj has no max_length, and its stream_reader ends quietly on a
    truncated file: the frame is fed a slice at a time instead, which bounds what it expands to.
    """

    def __init__(self):
        self._frame = zstandard.ZstdDecompressor(max_window_size=_MAX_WINDOW_BYTES).decompressobj()
        self._input = memoryview(b"")
        self._output = bytearray()

    def decompress(self, data: bytes, max_length: int) -> bytes:
        if data:
            self._input = memoryview(data)
        while len(self._output) < max_length and self._input and not self._frame.eof:
            self._output += self._frame.decompress(self._input[:_ZSTD_SLICE_BYTES])
            self._input = self._input[_ZSTD_SLICE_BYTES:]
        output = bytes(self._output[:max_length])
        del self._output[:max_length]
        return output

    @property
    def needs_input(self) -> bool:
        return not self._input and not self._output

    @property
    def eof(self) -> bool:
        return self._frame.eof and not self._output

    @property
    def unused_data(self) -> bytes:
        return bytes(self._frame.unused_data) + bytes(self._input)


class _DecompressedStream(io.RawIOBase):
    """The decompressed bytes of a file's members (gzip), streams (bz2, xz) or frames (zstd),
    one after another, with null padding after a member skipped (gzip and xz allow it).

    A read returns at most what was asked, so an overlong line costs no more than that; and
    what the steps before damage decompressed is returned before the damage raises (a buffered
    reader such as gzip.GzipFile drops what it gathered for a read that then fails). A file
    that ends inside a member, or holds none, raises EOFError instead of ending quietly.
    """

    def __init__(self, raw: BinaryIO, new_member: Callable):
        self._raw = raw
        self._new_member = new_member
        self._member = None
        self._finished_a_member = False
        self._input = b""
        self._output = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if not self._output:
            self._output = memoryview(self._decompress_step())
        size = min(len(buffer), len(self._output))
        buffer[:size] = self._output[:size]
        self._output = self._output[size:]
        return size

    def _decompress_step(self) -> bytes:
        """The next bytes, at most _DECOMPRESSED_STEP_BYTES; none at the end."""
        while True:
            if self._member is not None and self._member.eof:
                self._input, self._member = self._member.unused_data, None
                self._finished_a_member = True
            if not self._input and (self._member is None or self._member.needs_input):
                self._input = self._raw.read(_COMPRESSED_CHUNK_BYTES)
                if not self._input:
                    if self._member is None and self._finished_a_member:
                        return b""
                    raise EOFError("the compressed data ends early: the file is truncated")
            if self._member is None:
                if self._finished_a_member:
                    self._input = self._input.lstrip(b"\0")
                    if not self._input:
                        continue
                self._member = self._new_member()
            output = self._member.decompress(self._input, _DECOMPRESSED_STEP_BYTES)
            self._input = b""
            if output:
                return output


# Decompressors by extension, one per member, stream or frame. Python's file classes
# (gzip.GzipFile, bz2.BZ2File, lzma.LZMAFile) lose the last read before damage, and
# Beam's CompressedFile ends quietly on a truncated file, losing the rest without a trace.
_DECOMPRESSORS = {
    ".gz": _GzipMember,
    ".bz2": bz2.BZ2Decompressor,
    ".xz": functools.partial(lzma.LZMADecompressor, memlimit=_MAX_WINDOW_BYTES),
    ".lzma": functools.partial(lzma.LZMADecompressor, memlimit=_MAX_WINDOW_BYTES),
    ".zst": _ZstdFrame,
}


@contextlib.contextmanager
def open_file(path: str) -> Iterator[BinaryIO]:
    """A binary stream, decompressed according to the extension (.gz, .bz2, .xz, .zst)."""
    decompressor = _DECOMPRESSORS.get(posixpath.splitext(path)[1].lower())
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
        if decompressor is None:
            yield raw
        else:
            with _DecompressedStream(raw, decompressor) as stream:
                yield stream


def join(base: str, *parts: str) -> str:
    return FileSystems.join(base, *parts)


# Object stores publish an object only when its upload completes.
_ATOMIC_UPLOAD_SCHEMES = ("gs", "s3", "azfs")


def write_atomically(path: str, data: bytes) -> None:
    """Write so no reader ever sees a partial file: in an object store, one upload;
    on a file system, beside the destination under a hidden name, then a rename."""
    with create_atomically(path) as stream:
        stream.write(data)


@contextlib.contextmanager
def create_atomically(path: str) -> Iterator[BinaryIO]:
    """A stream whose bytes appear at ``path`` all at once when the block ends, and nowhere if it raises: for an
    object store, spooled in a local temporary file, then one upload; on a file system, written beside the
    destination under a hidden name, then renamed."""
    if FileSystems.get_scheme(path) in _ATOMIC_UPLOAD_SCHEMES:
        with tempfile.TemporaryFile() as spool:
            yield spool
            spool.seek(0)
            with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
                shutil.copyfileobj(spool, stream)
        return
    directory, name = posixpath.split(path)
    temporary = FileSystems.join(directory, f".{name}.tmp-{uuid.uuid4().hex}")
    try:
        with FileSystems.create(temporary, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
            yield stream
    except BaseException:
        FileSystems.delete([temporary])
        raise
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([temporary], [path])


def anchored(path: str) -> str:
    """A local path made absolute against this process's directory; a URL (gs://, file://) as it is."""
    if FileSystems.get_scheme(path) is None:
        return os.path.abspath(os.path.expanduser(path))
    return path


def exists(path: str) -> bool:
    return FileSystems.exists(path)


def read_bytes(path: str) -> bytes:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
        return stream.read()


def local_copy(path: str) -> str:
    """A local path for a file or directory that may be remote (model files), fetched once per machine and
    version of it.

    Every DoFn instance and worker process on a machine shares the copy, named by the path and its files' sizes
    and modification times, so a model replaced in place is fetched again. It is fetched under a temporary name
    and renamed into place: a reader never sees half of it. FileNotFoundError where nothing is there.
    """
    if FileSystems.get_scheme(path) in (None, "file"):
        return path
    path = path.rstrip("/")
    files = model_files(path)
    version = json.dumps([path, *((m.path, m.size_in_bytes, m.last_updated_in_seconds) for m in files)])
    digest = hashlib.sha256(version.encode("utf-8")).hexdigest()[:16]
    local = os.path.join(tempfile.gettempdir(), "embedmill-models", digest, posixpath.basename(path))
    if os.path.exists(local):
        return local
    partial = f"{local}.{uuid.uuid4().hex}.partial"
    for metadata in files:
        target = partial if metadata.path == path else os.path.join(partial, metadata.path[len(path) + 1 :])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with FileSystems.open(metadata.path, compression_type=CompressionTypes.UNCOMPRESSED) as remote:
            with open(target, "wb") as out:
                shutil.copyfileobj(remote, out, 1 << 20)
    try:
        os.replace(partial, local)
    except OSError:
        if not os.path.isdir(local):
            raise
        shutil.rmtree(partial)  # another process on this machine fetched the same directory first
    return local


def model_files(path: str) -> list:
    """The metadata of PATH, a file (or a local directory), or else of every file under it, by path;
    FileNotFoundError where there is none."""
    (exact,) = FileSystems.match([path])
    if exact.metadata_list:
        return exact.metadata_list
    (under,) = FileSystems.match([f"{path}/**"])
    if not under.metadata_list:
        raise FileNotFoundError(f"{path}: no such file or directory")
    return sorted(under.metadata_list, key=lambda metadata: metadata.path)


STAGING_PREFIX = ".staging-"
# In a staging directory: every file the publish step moves, listed once so a retried publish knows them all.
_PUBLISH_PLAN = ".publish-plan.json"


def _resolved(path: str) -> str:
    """A path in one spelling: local paths absolute with ., .., trailing slashes and symlinks resolved;
    object-store paths normalised as strings."""
    scheme = FileSystems.get_scheme(path)
    if scheme in (None, "file"):
        return os.path.realpath(os.path.expanduser(path.removeprefix("file://")))
    rest = posixpath.normpath("/" + path.split("://", 1)[1]).lstrip("/")
    return f"{scheme}://{rest}"


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def check_output_apart(output: str, inputs: list[tuple[str, str]]) -> None:
    """ValueError if --output is, contains or lies inside something a run reads, given as (option, path or glob);
    for a glob, if the output lies where its fixed prefix could match."""
    target = _resolved(output)
    for option, pattern in inputs:
        fixed = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
        if fixed == pattern:
            source = _resolved(pattern)
            clash = _inside(target, source) or _inside(source, target)
        else:
            directory, name = posixpath.split(fixed)
            prefix = posixpath.join(_resolved(directory or "."), name) if name else _resolved(directory) + "/"
            clash = (target + "/").startswith(prefix) or _inside(prefix, target)
        if clash:
            raise ValueError(f"--output {output} overlaps {option} {pattern}: a run must not write where it reads")


def _top_level_entries(directory: str) -> dict[str, list[str]]:
    """The names directly in ``directory`` -> the paths of the files under each, relative to ``directory``."""
    prefix = directory.rstrip("/") + "/"
    entries: dict[str, list[str]] = {}
    for path in match_files(join(directory, "**")):
        relative = path[len(prefix) :]
        entries.setdefault(relative.split("/", 1)[0], []).append(relative)
    return entries


def _written_by_a_run(name: str) -> bool:
    """Whether a name directly in --output is one a run writes (its staging directories included)."""
    return name in (SHARDS_DIR, DEAD_LETTER_DIR, REJECTED_DIR, GENERATIONS_DIR, MANIFEST_NAME, DATASET_CARD, *_KEPT) or (
        name.startswith((f".{MANIFEST_NAME}.tmp-", STAGING_PREFIX))
    )


# What a run writes into --output directly, not through its staging, and a later run there keeps: the LLM
# response cache (generate), written as responses arrive so that a killed run keeps what it paid for.
_KEPT = (LLM_CACHE_DIR,)


def is_file(path: str) -> bool:
    """Whether ``path`` is a file (an object, in an object store), not a directory or nothing."""
    if FileSystems.get_scheme(path) in (None, "file"):
        return os.path.isfile(path)
    return path in match_files(path)


def prepare_output(output: str, overwrite: bool) -> None:
    """Check that ``output`` can take a run: empty, or (with ``overwrite``) holding only what a run
    writes. Nothing is deleted here: the run is staged and replaces the earlier one when it is complete
    (see ``publish_run``). Staging left by an interrupted run, and a response cache, count as no run."""
    if is_file(output.rstrip("/")):
        raise FileExistsError(f"--output {output} is a file; name a directory")
    present = _top_level_entries(output)
    strangers = sorted(name for name in present if not _written_by_a_run(name))
    # A card with no run beside it (no manifest, nor the staging of a publish that was cut short) is the user's.
    if DATASET_CARD in present and not any(name == MANIFEST_NAME or name.startswith(STAGING_PREFIX) for name in present):
        strangers.insert(0, DATASET_CARD)
    if strangers:
        raise FileExistsError(
            f"--output {output} holds files a mining run did not write ({', '.join(strangers[:5])}); "
            "choose another directory"
        )
    if not overwrite and any(not name.startswith(STAGING_PREFIX) and name not in _KEPT for name in present):
        raise FileExistsError(f"--output {output} holds an earlier run; add --overwrite to replace it")


@dataclass(frozen=True)
class Destination:
    """Where a run is written (``staging``) and where it is published once complete (``output``).

    The staging directory lies inside ``output``, not beside it: on the same file system or bucket
    (renames stay renames), with no parent needed (``gs://bucket`` works), and readers of ``output``
    never look into a hidden directory. A new id per run keeps an interrupted run's leftovers apart.
    """

    output: str
    staging: str

    @classmethod
    def for_output(cls, output: str) -> "Destination":
        return cls(output, join(output, f"{STAGING_PREFIX}{uuid.uuid4().hex}"))


def _move(source: str, destination: str) -> None:
    if FileSystems.get_scheme(destination) in (None, "file"):
        parent = posixpath.dirname(destination)
        if not FileSystems.exists(parent):
            FileSystems.mkdirs(parent)
    FileSystems.rename([source], [destination])


def publish_run(staging: str, output: str) -> None:
    """Replace the run in ``output`` with the complete one in ``staging``; idempotent, so a retried step is safe.

    The old manifest goes first, so no reader ever takes old and new shards for one run; the new
    manifest comes last, when every file it names is in place. The response cache (``_KEPT``) is no part
    of a run: it stays. Until it is there the staged files
    not yet moved stay in ``staging``, and a retry finishes the move from the plan written up front.
    """
    staged_manifest = join(staging, MANIFEST_NAME)
    plan_path = join(staging, _PUBLISH_PLAN)
    if FileSystems.exists(plan_path):
        planned = set(json.loads(read_bytes(plan_path)))
    elif FileSystems.exists(staged_manifest):
        # Hidden names are temporary files of interrupted writes (and of this plan): no part of the run.
        planned = {
            path
            for name, paths in _top_level_entries(staging).items()
            if _written_by_a_run(name)
            for path in paths
            if not any(part.startswith(".") for part in path.split("/"))
        }
        write_atomically(plan_path, json.dumps(sorted(planned)).encode("utf-8"))
    else:
        planned = None  # published already: only the staging directory is left to remove
    if planned is not None:
        manifest = join(output, MANIFEST_NAME)
        if FileSystems.exists(staged_manifest) and FileSystems.exists(manifest):
            FileSystems.delete([manifest])
        own = posixpath.basename(staging.rstrip("/"))
        for name, paths in sorted(_top_level_entries(output).items()):
            if name == own or name in _KEPT or not _written_by_a_run(name):
                continue
            stale = [join(output, path) for path in paths if path not in planned]
            if len(stale) == len(paths):
                _delete_tree(join(output, name))
            elif stale:
                FileSystems.delete(stale)
        for path in [*sorted(planned - {MANIFEST_NAME}), MANIFEST_NAME]:
            if FileSystems.exists(join(staging, path)):
                _move(join(staging, path), join(output, path))
    _delete_tree(staging)


def _delete_tree(path: str) -> None:
    """Delete a file or a directory and everything under it, if it is there."""
    if FileSystems.get_scheme(path) in (None, "file"):
        if FileSystems.exists(path):
            FileSystems.delete([path])
        return
    objects = match_files(join(path, "**")) + match_files(path)
    if objects:
        FileSystems.delete(objects)
