import gzip
import os
import socket
import json
import subprocess
import sys
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


@pytest.fixture(scope="session")
def default_pretrain_run(tmp_path_factory) -> tuple[Path, str]:
    """The Quick start's run as a new user starts it, no option but the output (the bundled samples:
    every source kind, every stage): its directory and what it printed."""
    output = tmp_path_factory.mktemp("default-pretrain") / "run"
    done = subprocess.run(
        [sys.executable, "beam_runner.py", f"--output={output}"], cwd=REPO, capture_output=True, text=True, check=True
    )
    return output, done.stdout


def write_lines(path: Path, lines: list, *, compress: bool = False) -> Path:
    """JSON-encode every item that is not bytes; bytes are written as they are."""
    data = b"".join(
        (item if isinstance(item, bytes) else json.dumps(item, ensure_ascii=False).encode("utf-8")) + b"\n"
        for item in lines
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
    return path


@pytest.fixture(scope="session")
def gcs_bucket():
    """A Cloud Storage API on 127.0.0.1 (gcp-storage-emulator) and a bucket in it.

    The google-cloud-storage client under Beam's GCS filesystem (and gcsfs) finds
    the server through STORAGE_EMULATOR_HOST, as it would find the real service.
    """
    from gcp_storage_emulator.server import create_server

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket="embedmill-test")
    server.start()
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
    try:
        yield "gs://embedmill-test"
    finally:
        server.stop()
        if previous is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous
