import gzip

import pytest
from apache_beam.io.filesystems import FileSystems

from pipelines import io


def test_write_atomically_replaces_and_leaves_nothing_behind(tmp_path):
    target = tmp_path / "shards" / "x" / "x-00000-of-00001.arrow"
    io.write_atomically(str(target), b"first")
    io.write_atomically(str(target), b"second")
    assert target.read_bytes() == b"second"
    assert [p.name for p in target.parent.iterdir()] == [target.name]


def test_failed_write_never_shows_under_the_final_name(tmp_path, monkeypatch):
    def broken_rename(sources, destinations):
        raise OSError("disk gone")

    monkeypatch.setattr(FileSystems, "rename", broken_rename)
    target = tmp_path / "shard.arrow"
    with pytest.raises(OSError):
        io.write_atomically(str(target), b"data")
    assert not target.exists()
    assert all(p.name.startswith(".shard.arrow.tmp-") for p in tmp_path.iterdir())


def test_a_stream_that_fails_midway_leaves_the_earlier_file_and_nothing_else(tmp_path):
    target = tmp_path / "shard.arrow"
    io.write_atomically(str(target), b"earlier")
    with pytest.raises(ValueError):
        with io.create_atomically(str(target)) as stream:
            stream.write(b"half a shard")
            raise ValueError("a bad row")
    assert target.read_bytes() == b"earlier"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]
    with io.create_atomically(str(target)) as stream:
        stream.write(b"first half, ")
        stream.write(b"second half")
    assert target.read_bytes() == b"first half, second half"


def test_open_file_decompresses_by_extension(tmp_path):
    (tmp_path / "a.txt.gz").write_bytes(gzip.compress(b"hello\n"))
    (tmp_path / "b.txt").write_bytes(b"plain\n")
    with io.open_file(str(tmp_path / "a.txt.gz")) as stream:
        assert stream.read() == b"hello\n"
    with io.open_file(str(tmp_path / "b.txt")) as stream:
        assert stream.read() == b"plain\n"


def test_open_file_returns_everything_before_the_damage_then_raises(tmp_path):
    """gzip.GzipFile.read raised EOFError on a cut trailer and lost the bytes it had decompressed."""
    data = b"".join(b"%d\n" % i for i in range(300_000))
    path = tmp_path / "cut.txt.gz"
    path.write_bytes(gzip.compress(data, mtime=0)[:-8])
    got = bytearray()
    with pytest.raises(EOFError, match="truncated"), io.open_file(str(path)) as stream:
        while chunk := stream.read(1 << 20):
            assert len(chunk) <= 1 << 20
            got += chunk
    assert got == data
