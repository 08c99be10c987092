import gzip
import json
from pathlib import Path

import pytest

from mining.langid import FastTextIdentifier

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def tatoeba_dir() -> Path:
    path = SHARED_DATA / "tatoeba"
    assert path.is_dir(), f"the shared Tatoeba data is expected at {path}"
    return path


@pytest.fixture(scope="session")
def identifier() -> FastTextIdentifier:
    return FastTextIdentifier()


def write_lines(path: Path, lines: list, *, compress: bool = False) -> Path:
    """JSON-encode every item that is not bytes; bytes are written as they are."""
    data = b"".join(
        (item if isinstance(item, bytes) else json.dumps(item, ensure_ascii=False).encode("utf-8")) + b"\n"
        for item in lines
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
    return path
