"""What every reporting stage shares: its drops and dead letters counted, for the job's UI and the manifest."""

from dataclasses import dataclass

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from mining.records import DeadLetter, Drop
from mining.report import FunnelReport
from schemas.reasons import Stage

# The outputs a reporting stage adds to its main one.
REPORT = "report"
DEAD = "dead_letter"
METRICS_NAMESPACE = "mining"


@dataclass(frozen=True)
class RunContext:
    """What every stage of one run is built with."""

    batch_size: int = 512  # records a DoFn handles per step (--batch-size)
    sample_size: int = 100  # dropped records kept per reason under rejected/ (--rejected-sample-size)


class UndeclaredReason(RuntimeError):
    """A stage dropped or dead-lettered a record for a reason ``schemas.reasons`` does not give it: a bug."""


class ReportingDoFn(beam.DoFn):
    """Collects one FunnelReport per bundle and emits it on the ``report`` output.

    ``STAGE`` (each subclass's) names the reasons it may drop for; reports are read by those declarations.
    """

    STAGE: Stage

    def __init__(self, run: RunContext):
        self._run = run
        self._counters = {}

    def start_bundle(self):
        self._report = FunnelReport(self._run.sample_size)

    def finish_bundle(self):
        if self._report:
            yield beam.pvalue.TaggedOutput(REPORT, GlobalWindows.windowed_value(self._report))

    def _count(self, name: str, n: int = 1) -> None:
        if name not in self._counters:
            self._counters[name] = Metrics.counter(METRICS_NAMESPACE, name)
        self._counters[name].inc(n)

    def _drop_all(self, drops: list[Drop]) -> None:
        for drop in drops:
            if drop.reason not in self.STAGE.drops:
                raise UndeclaredReason(f"stage {self.STAGE.name} dropped a record for {drop.reason!r}")
            self._report.add_drop(drop)
            self._count(f"dropped_{drop.reason}")

    def _count_skipped(self, source: str, reason: str, n: int) -> None:
        """``n`` candidates (not records) of ``source`` skipped for ``reason``."""
        if reason not in self.STAGE.skips:
            raise UndeclaredReason(f"stage {self.STAGE.name} skipped candidates for {reason!r}")
        self._report.count_skipped(source, reason, n)
        self._count(f"skipped_{reason}", n)

    def _dead_letter(self, letter: DeadLetter):
        """Counts ``letter``; what to yield for it on the ``dead_letter`` output."""
        if letter.reason not in self.STAGE.dead_letters:
            raise UndeclaredReason(f"stage {self.STAGE.name} dead-lettered a record for {letter.reason!r}")
        self._report.add_dead_letter(letter)
        self._count(f"dead_letter_{letter.reason}")
        return beam.pvalue.TaggedOutput(DEAD, letter.to_dict())


class Reports:
    """The report outputs of a run's stages, gathered as each stage is applied, so none is left out."""

    def __init__(self):
        self._outputs = []

    def add(self, outputs):
        """``outputs`` (a reporting stage's tagged outputs), its report kept."""
        self._outputs.append(outputs[REPORT])
        return outputs

    def merged(self):
        return self._outputs | "Reports" >> beam.Flatten()
