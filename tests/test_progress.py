"""Progress of local runs and of evaluation: on a terminal only, never with --quiet, and never changing results."""

import collections
import contextlib
import fcntl
import io
import json
import os
import pty
import re
import struct
import termios
import threading

import numpy as np

import beam_runner
from schemas import reasons
from training.cli import main as training_main


def _shards(output) -> list[tuple[str, str]]:
    manifest = json.loads((output / "manifest.json").read_text())
    return sorted((shard["path"], shard["sha256"]) for shard in manifest["shards"])


class _Terminal:
    """A pseudo-terminal 120 columns wide as stderr; what was drawn on it is ``text`` once closed."""

    def __enter__(self):
        self._reader, writer = pty.openpty()
        fcntl.ioctl(writer, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
        self.stream = os.fdopen(writer, "w")
        self._chunks = []
        self._drain = threading.Thread(target=self._read)  # a full pty would block the run writing to it
        self._drain.start()
        return self

    def _read(self):
        while True:
            try:
                chunk = os.read(self._reader, 65536)
            except OSError:  # the writing side closed
                return
            if not chunk:
                return
            self._chunks.append(chunk)

    def __exit__(self, *exc):
        self.stream.close()
        self._drain.join()
        os.close(self._reader)
        self.text = b"".join(self._chunks).decode("utf-8", "replace")


def test_progress_on_a_terminal_only_and_the_same_shards_either_way(tatoeba_dir, tmp_path):
    def _run(output, stderr, *extra: str) -> None:
        with contextlib.redirect_stderr(stderr):
            assert beam_runner.main([f"--source=nllb={tatoeba_dir}/tatoeba.kab-eng", f"--output={output}", *extra]) == 0

    with _Terminal() as shown:
        _run(tmp_path / "terminal", shown.stream)
    assert "stages:" in shown.text and "\r" in shown.text
    # The last counts shown are the manifest's removals, by the stage of their reason as the funnel counts them.
    removed = collections.Counter()
    for reason, n in json.loads((tmp_path / "terminal" / "manifest.json").read_text())["totals"]["dropped"].items():
        removed[reasons.stage_of(reason).name] += n
    last_shown = re.findall(r"removed: ([^\x1b\r\n]*)", shown.text)[-1]
    assert sorted(last_shown.split(" · ")) == sorted(f"{stage} {n}" for stage, n in removed.items())
    assert re.search(r"out: .*Unbatch \d+", shown.text)

    with _Terminal() as quiet:
        _run(tmp_path / "quiet", quiet.stream, "--quiet")
    assert quiet.text == ""

    piped = io.StringIO()
    _run(tmp_path / "piped", piped)
    assert piped.getvalue() == ""

    assert _shards(tmp_path / "terminal") == _shards(tmp_path / "quiet") == _shards(tmp_path / "piped")
    assert _shards(tmp_path / "terminal")


def letter_counts(texts: list[str], kind: str) -> np.ndarray:
    return np.array([[text.lower().count(c) for c in "abcdefghijklmnopqrstuvwxyz"] + [1] for text in texts], float)


def test_evaluation_counts_the_texts_encoded_on_a_terminal_only(tatoeba_dir, tmp_path):
    def evaluate(name: str, stderr, *extra: str) -> dict:
        scores = tmp_path / f"{name}.json"
        with contextlib.redirect_stderr(stderr):
            training_main(["evaluate", "tatoeba", "--model", f"python:{__name__}:letter_counts", "--data",
                           str(tatoeba_dir), "--languages", "fra", "kab", "--json", str(scores), *extra])  # fmt: skip
        return json.loads(scores.read_text())

    with _Terminal() as shown:
        shown_scores = evaluate("terminal", shown.stream)
    # Both sides of 1000 sentence pairs in each of the two languages.
    assert re.search(r"\rtatoeba: texts encoded: +\d+%.* [1-9]\d*/4000 ", shown.text), shown.text[-500:]
    with _Terminal() as quiet:
        quiet_scores = evaluate("quiet", quiet.stream, "--quiet")
    assert quiet.text == ""
    piped = io.StringIO()
    assert evaluate("piped", piped) == quiet_scores == shown_scores
    assert piped.getvalue() == ""
