"""A mining run never imports torch, transformers or Beam's RunInference: only the pipelines that embed
(consistency, hardnegatives) need them, and they would cost every run seconds and hundreds of MB."""

import subprocess
import sys

from tests.conftest import REPO, write_lines

HEAVY = ("torch", "transformers", "apache_beam.ml.inference")

# A fresh interpreter: the test process has long imported all of them.
_DRIVER = f"""
import sys
import beam_runner
code = beam_runner.main(sys.argv[1:])
print(sorted(name for name in {HEAVY!r} if name in sys.modules))
sys.exit(code)
"""


def test_a_pretrain_run_imports_no_torch(tmp_path):
    write_lines(tmp_path / "qa.jsonl", [
        ["How long is the river Thames?", "The Thames flows for about 346 kilometres from the Cotswolds to the sea."],
        ["What do pandas eat?", "Giant pandas feed almost entirely on bamboo, eating for up to fourteen hours a day."],
    ])
    done = subprocess.run(
        [sys.executable, "-c", _DRIVER, f"--source=sbert:en={tmp_path}/qa.jsonl", f"--output={tmp_path}/out"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "pretrain: 2 pairs" in done.stdout
    assert done.stdout.splitlines()[-1] == "[]"
