"""Progress of a local run on the terminal: the FnApiRunner's stages done, and counts from their metrics.

Beam 2.77's FnApiRunner runs the whole pipeline inside ``pipeline.run()``, so ``PipelineResult.metrics()``
comes too late, and its progress requests to the SDK workers take no callback. What it does hand back, in
this process whatever ``--direct_running_mode``, is each bundle's monitoring infos: a fused stage's bundle
is its whole input here, so the counts move once per stage.
"""

import sys

from apache_beam.metrics import monitoring_infos
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from tqdm import tqdm

from pipelines.reporting import METRICS_NAMESPACE
from schemas import reasons


def shows_progress(quiet: bool) -> bool:
    """Bars only for a person at a terminal: never in logs, pipes or CI output."""
    return not quiet and sys.stderr.isatty()


class ProgressRunner(FnApiRunner):
    """An FnApiRunner that shows on stderr, while it runs: the fused stages done, the records removed so far by
    the stage of their reason (as the funnel counts them), and the elements each named step (``"Clean" >> ...``)
    has put out so far (batches of records before ``Unbatch``)."""

    def run_stages(self, stage_context, stages):
        self._step_of_pcollection = _top_level_steps(stage_context.components)
        self._step_counts: dict[str, int] = {}
        self._removed: dict[str, int] = {}  # by the stage that decides the reason
        self._stages_done: set[str] = set()
        lines = {"file": sys.stderr, "dynamic_ncols": True, "leave": False}
        self._bar = tqdm(total=len(stages), unit="stage", desc="stages", **lines)
        self._removed_line = tqdm(bar_format="{desc}", position=1, **lines)
        self._steps_line = tqdm(bar_format="{desc}", position=2, **lines)
        try:
            return super().run_stages(stage_context, stages)
        finally:
            for line in (self._steps_line, self._removed_line, self._bar):
                line.close()

    def _execute_bundle(self, runner_execution_context, bundle_context_manager, bundle_input):
        result = super()._execute_bundle(runner_execution_context, bundle_context_manager, bundle_input)
        self._add(result.process_bundle.monitoring_infos)
        stage = bundle_context_manager.stage.name
        if stage not in self._stages_done:  # a stage may run more than one bundle (timers, watermarks)
            self._stages_done.add(stage)
            self._bar.update(1)
        self._removed_line.set_description_str(
            "removed: " + (" · ".join(f"{stage} {n}" for stage, n in self._removed.items()) or "none yet")
        )
        self._steps_line.set_description_str("out: " + " · ".join(f"{step} {n}" for step, n in self._step_counts.items()))
        return result

    def _add(self, infos) -> None:
        for info in infos:
            if info.urn == monitoring_infos.ELEMENT_COUNT_URN:
                step = self._step_of_pcollection.get(info.labels.get(monitoring_infos.PCOLLECTION_LABEL))
                if step is not None:
                    self._step_counts[step] = self._step_counts.get(step, 0) + monitoring_infos.extract_counter_value(info)
            elif info.urn == monitoring_infos.USER_COUNTER_URN and (
                info.labels.get(monitoring_infos.NAMESPACE_LABEL) == METRICS_NAMESPACE
            ):
                name = info.labels.get(monitoring_infos.NAME_LABEL, "")
                reason = name.removeprefix("dropped_").removeprefix("dead_letter_")
                if reason != name:  # skipped_ counts candidates, not records
                    stage = reasons.stage_of(reason).name
                    self._removed[stage] = self._removed.get(stage, 0) + monitoring_infos.extract_counter_value(info)


def _top_level_steps(components) -> dict[str, str]:
    """Each main output of a step the pipeline names at its top level, to that name."""
    steps = {}
    for transform in components.transforms.values():
        name = transform.unique_name
        if name and "/" not in name and transform.outputs:
            main = transform.outputs.get("None") or next(iter(transform.outputs.values()))
            steps[main] = name
    return steps
