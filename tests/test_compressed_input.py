"""Compressed input: every line decoded before damage is kept, and decompression is bounded."""

import bz2
import gzip
import hashlib
import json
import lzma
import subprocess
import sys
import tracemalloc
import zlib
from pathlib import Path

import pytest
import zstandard
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

import beam_runner
from mining import lines
from mining.records import DeadLetter
from mining.sources import get_reader
from mining.sources.base import ReadLimits
from pipelines import io
from schemas.manifest import Manifest
from schemas.reasons import UNREADABLE

REPO = Path(__file__).resolve().parents[1]

# Hex digests barely compress: a bz2 file of these holds several blocks to cut between.
LINES = [b'["question %d?", "%s"]' % (i, hashlib.sha256(b"%d" % i).hexdigest().encode()) for i in range(4000)]
DATA = b"\n".join(LINES) + b"\n"

COMPRESS = {
    ".gz": lambda data: gzip.compress(data, mtime=0),
    ".bz2": lambda data: bz2.compress(data, compresslevel=1),  # 100 kB blocks
    ".xz": lzma.compress,
    ".lzma": lambda data: lzma.compress(data, format=lzma.FORMAT_ALONE),
    ".zst": lambda data: zstandard.ZstdCompressor().compress(data),
}

# What each codec's own incremental decompressor makes of a prefix: all that is decodable.
DECODABLE = {
    ".gz": lambda prefix: zlib.decompressobj(wbits=31).decompress(prefix),
    ".bz2": lambda prefix: bz2.BZ2Decompressor().decompress(prefix),
    ".xz": lambda prefix: lzma.LZMADecompressor().decompress(prefix),
    ".lzma": lambda prefix: lzma.LZMADecompressor().decompress(prefix),
    ".zst": lambda prefix: zstandard.ZstdDecompressor().decompressobj().decompress(prefix),
}


def read_lines(path, max_line_bytes=1 << 20) -> tuple[list[bytes], list[DeadLetter]]:
    kept, letters = [], []
    for item in get_reader("sbert").text_lines(str(path), io.open_file, ReadLimits(max_line_bytes)):
        if isinstance(item, DeadLetter):
            letters.append(item)
        else:
            kept.append(item.data)
    return kept, letters


@pytest.mark.parametrize("extension", sorted(COMPRESS))
@pytest.mark.parametrize("chunk_bytes", [13, 4096, 1 << 20])
def test_truncated_file_keeps_every_line_before_the_damage(tmp_path, monkeypatch, extension, chunk_bytes):
    monkeypatch.setattr(lines, "CHUNK_BYTES", chunk_bytes)
    compressed = COMPRESS[extension](DATA)
    for cut in (len(compressed) - 1, len(compressed) - 8, len(compressed) * 2 // 3, len(compressed) // 3, 20):
        path = tmp_path / f"cut-{cut}.jsonl{extension}"
        path.write_bytes(compressed[:cut])
        kept, letters = read_lines(path)
        decodable = DECODABLE[extension](compressed[:cut]).count(b"\n")
        assert kept == LINES[:decodable], f"cut at {cut} of {len(compressed)}"
        assert [(letter.reason, letter.file) for letter in letters] == [(UNREADABLE, str(path))]
        assert f"after line {decodable}" in letters[0].detail
    assert DECODABLE[extension](compressed[: len(compressed) * 2 // 3]).count(b"\n") > 0, "the test cuts through data"


@pytest.mark.parametrize("extension", sorted(COMPRESS))
def test_corrupt_file_keeps_the_same_lines_before_the_damage_whatever_the_chunk_size(tmp_path, monkeypatch, extension):
    compressed = bytearray(COMPRESS[extension](DATA))
    compressed[len(compressed) * 2 // 3] ^= 0xFF
    path = tmp_path / f"flipped.jsonl{extension}"
    path.write_bytes(compressed)
    results = []
    for chunk_bytes in (13, 4096, 1 << 20):
        monkeypatch.setattr(lines, "CHUNK_BYTES", chunk_bytes)
        kept, letters = read_lines(path)
        assert [letter.reason for letter in letters] == [UNREADABLE]
        results.append(kept)
    assert results[0] == results[1] == results[2]
    # A codec may pass on damaged bytes before it notices them; what came before is intact.
    assert results[0][:1000] == LINES[:1000]


def test_gzip_with_only_its_trailer_cut_keeps_every_line(tmp_path):
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(gzip.compress(b"".join(b'["q%d", "p%d"]\n' % (i, i) for i in range(200)), mtime=0)[:-8])
    kept, letters = read_lines(path)
    assert len(kept) == 200 and [letter.reason for letter in letters] == [UNREADABLE]


@pytest.mark.parametrize("extension", sorted(COMPRESS))
def test_members_streams_and_frames_one_after_another(tmp_path, extension):
    """Concatenated gzip members, bz2 and xz streams, zstd frames; null padding between them."""
    first, second = COMPRESS[extension](DATA[:1000] + b"\n"), COMPRESS[extension](DATA)
    path = tmp_path / f"joined.jsonl{extension}"
    path.write_bytes(first + b"\0" * 8 + second)
    kept, letters = read_lines(path)
    assert kept == DATA[:1000].split(b"\n") + LINES and not letters


@pytest.mark.parametrize("extension", sorted(COMPRESS))
def test_garbage_after_the_last_member_is_a_dead_letter(tmp_path, extension):
    path = tmp_path / f"trailing.jsonl{extension}"
    path.write_bytes(COMPRESS[extension](DATA) + b"not compressed")
    kept, letters = read_lines(path)
    assert kept == LINES and [letter.reason for letter in letters] == [UNREADABLE]


@pytest.mark.parametrize(
    ("extension", "content"),
    # Zeros are no member, but 13 of them are an empty LZMA-alone stream (which .xz accepts
    # too, as lzma.LZMAFile does) and the rest its padding.
    [(extension, b"") for extension in sorted(COMPRESS)]
    + [(extension, b"\0" * 64) for extension in (".bz2", ".gz", ".zst")],
    ids=lambda value: value if isinstance(value, str) else f"{len(value)} zero bytes",
)
def test_file_without_any_member_is_a_dead_letter(tmp_path, extension, content):
    """What a copy that never got its data leaves behind; no compressor writes it."""
    path = tmp_path / f"never-written.jsonl{extension}"
    path.write_bytes(content)
    kept, letters = read_lines(path)
    assert not kept and [letter.reason for letter in letters] == [UNREADABLE]


def test_zstd_with_a_2_gib_window_and_a_skippable_frame(tmp_path):
    """Pushshift's dumps: zstd --long=31, written as a stream."""
    parameters = zstandard.ZstdCompressionParameters.from_level(3, window_log=31, enable_ldm=True)
    compressor = zstandard.ZstdCompressor(compression_params=parameters).compressobj()
    frame = compressor.compress(DATA) + compressor.flush()
    skippable = (0x184D2A50).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"abc"
    path = tmp_path / "RC_2019-04.zst"
    path.write_bytes(skippable + frame)
    kept, letters = read_lines(path)
    assert kept == LINES and not letters


def test_lzma_dictionary_over_the_window_limit_is_a_dead_letter(tmp_path):
    """A header may ask for a 4 GiB dictionary, which a bomb then fills; zstd's windows stop at 2 GiB too."""
    compressed = bytearray(lzma.compress(DATA, format=lzma.FORMAT_ALONE))
    compressed[1:5] = (3 << 30).to_bytes(4, "little")  # the LZMA-alone header's dictionary size
    path = tmp_path / "huge-dictionary.jsonl.lzma"
    path.write_bytes(compressed)
    kept, letters = read_lines(path)
    assert not kept and [letter.reason for letter in letters] == [UNREADABLE]
    assert "Memory usage limit" in letters[0].detail


def _bomb(compressor, expanded_bytes: int) -> bytes:
    """``expanded_bytes`` of b"a" and no line break, compressed a piece at a time."""
    piece = b"a" * (1 << 20)
    return b"".join(compressor.compress(piece) for _ in range(expanded_bytes // len(piece))) + compressor.flush()


BOMBS = {
    ".gz": lambda: zlib.compressobj(1, wbits=31),
    ".bz2": lambda: bz2.BZ2Compressor(1),
    ".xz": lambda: lzma.LZMACompressor(preset=0),
    ".zst": lambda: zstandard.ZstdCompressor(level=1).compressobj(),
}


@pytest.mark.parametrize("extension", sorted(BOMBS))
def test_decompression_bomb_is_read_in_bounded_memory(tmp_path, extension):
    expanded = 64 << 20
    path = tmp_path / f"bomb.jsonl{extension}"
    path.write_bytes(_bomb(BOMBS[extension](), expanded))
    assert path.stat().st_size < expanded // 100
    tracemalloc.start()
    try:
        kept, letters = read_lines(path, max_line_bytes=1 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert not kept and [letter.reason for letter in letters] == ["line_too_long"]
    # CHUNK_BYTES and --max-line-bytes of 1 MiB each, and a zstd slice's 4 MiB: far from 64 MiB.
    assert peak < 24 << 20, f"{peak / 2**20:.0f} MiB for a 64 MiB line"


def test_a_16_kb_zstd_file_of_512_mib_without_a_line_break_costs_no_gigabytes(tmp_path):
    """Resident memory, zstd's own buffers included, measured in a fresh process."""
    path = tmp_path / "bomb.jsonl.zst"
    path.write_bytes(_bomb(zstandard.ZstdCompressor(level=3).compressobj(), 512 << 20))
    script = (
        "import resource, sys\n"
        "from mining.lines import iter_lines\n"
        "from pipelines import io\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "with io.open_file(sys.argv[1]) as stream:\n"
        "    found = [(line.number, line.too_long) for line in iter_lines(stream, 1 << 20)]\n"
        "print(found, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(path)], cwd=REPO, capture_output=True, text=True, check=True
    )
    found, grown_mib = result.stdout.rsplit(" ", 1)
    assert found == "[(1, True)]"
    assert int(grown_mib) < 256, f"{grown_mib} MiB more resident memory for one 512 MiB line"


def test_pipeline_keeps_the_lines_of_a_truncated_gzip_and_accounts_for_the_rest(tmp_path):
    rows = [
        [f"Where does the road number {i} lead to?", f"Road number {i} leads north to a small harbour town."]
        for i in range(200)
    ]
    sources = tmp_path / "sources"
    sources.mkdir()
    compressed = gzip.compress(b"".join(json.dumps(row).encode() + b"\n" for row in rows), mtime=0)
    (sources / "cut.jsonl.gz").write_bytes(compressed[:-8])
    output = tmp_path / "out"
    # Templated rows are near-duplicates of each other; this is about reading them.
    assert beam_runner.main([f"--source=sbert={sources}/*.jsonl.gz", f"--output={output}", "--near-dup=off"]) == 0
    manifest = Manifest.model_validate_json((output / "manifest.json").read_text("utf-8"))
    sbert = manifest.sources["sbert"]
    assert sbert.input == 201 and sbert.dead_letter == 1
    assert sbert.input == sbert.output + sum(sbert.dropped.values()) + sbert.dead_letter
    assert sbert.output == 200, sbert.dropped
    letters = [json.loads(line) for path in (output / "dead_letter").rglob("*.jsonl") for line in path.open()]
    assert [letter["reason"] for letter in letters] == [UNREADABLE]


@pytest.mark.parametrize("extension", [".gz", ".zst"])
def test_truncated_file_in_cloud_storage_keeps_its_lines(gcs_bucket, extension):
    compressed = COMPRESS[extension](DATA)
    remote = f"{gcs_bucket}/compressed-input/cut.jsonl{extension}"
    with FileSystems.create(remote, compression_type=CompressionTypes.UNCOMPRESSED) as out:
        out.write(compressed[: len(compressed) // 2])
    kept, letters = read_lines(remote)
    decodable = DECODABLE[extension](compressed[: len(compressed) // 2]).count(b"\n")
    assert decodable > 0 and kept == LINES[:decodable]
    assert [(letter.reason, letter.file) for letter in letters] == [(UNREADABLE, remote)]
