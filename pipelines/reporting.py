"""What every reporting stage shares: its drops and dead letters counted, for the job's UI and the manifest."""

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from mining.records import DeadLetter, Drop
from mining.report import FunnelReport

# The outputs a reporting stage adds to its main one.
REPORT = "report"
DEAD = "dead_letter"
METRICS_NAMESPACE = "mining"


class ReportingDoFn(beam.DoFn):
    """Collects one FunnelReport per bundle and emits it on the ``report`` output."""

    def __init__(self, sample_size: int):
        self._sample_size = sample_size
        self._counters = {}

    def start_bundle(self):
        self._report = FunnelReport(self._sample_size)

    def finish_bundle(self):
        if self._report:
            yield beam.pvalue.TaggedOutput(REPORT, GlobalWindows.windowed_value(self._report))

    def _count(self, name: str, n: int = 1) -> None:
        if name not in self._counters:
            self._counters[name] = Metrics.counter(METRICS_NAMESPACE, name)
        self._counters[name].inc(n)

    def _drop_all(self, drops: list[Drop]) -> None:
        for drop in drops:
            self._report.add_drop(drop)
            self._count(f"dropped_{drop.reason}")

    def _dead_letter(self, letter: DeadLetter):
        """Counts ``letter``; what to yield for it on the ``dead_letter`` output."""
        self._report.add_dead_letter(letter)
        self._count(f"dead_letter_{letter.reason}")
        return beam.pvalue.TaggedOutput(DEAD, letter.to_dict())
