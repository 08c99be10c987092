"""The fine-tuning and instruction pipelines give the same shards on every run, whatever the worker count.

(The pretrain pipeline's runs are compared in test_pipeline.py, the derived pipelines' in their own tests.)
"""

from pathlib import Path

import pytest

import beam_runner
from schemas.manifest import Manifest


def _mine(pipeline: str, output: Path, *extra: str) -> Manifest:
    assert beam_runner.main([f"--pipeline={pipeline}", f"--output={output}", *extra]) == 0
    return Manifest.model_validate_json((output / "manifest.json").read_text("utf-8"))


@pytest.mark.parametrize("pipeline", ["finetune", "instruct"])
def test_two_workers_give_the_shards_of_one(pipeline, tmp_path):
    one = _mine(pipeline, tmp_path / "one", "--shard-size-mb=0.01")
    two = _mine(
        pipeline, tmp_path / "two", "--shard-size-mb=0.01",
        "--direct_num_workers=2", "--direct_running_mode=multi_processing",
    )
    assert len(one.shards) > 1
    assert [(s.path, s.rows, s.sha256) for s in two.shards] == [(s.path, s.rows, s.sha256) for s in one.shards]
    assert two.totals == one.totals
    assert two.sources == one.sources
