"""The reasons a record leaves a run: declared once, each under one stage, and stages held to them."""

import apache_beam as beam
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from mining.records import DeadLetter, Drop, new_pair
from pipelines import reporting, stages
from schemas import reasons

DECLARED = {name: value for name, value in vars(reasons).items() if name.isupper() and isinstance(value, str)}
ALL_STAGES = (*reasons.MINING_FUNNEL, reasons.WRITE, *reasons.FILTERS, reasons.HARD_NEGATIVES, *reasons.GENERATION)


def test_every_reason_is_declared_by_exactly_one_stage():
    for name, reason in DECLARED.items():
        owners = [stage.name for stage in ALL_STAGES if reason in stage.drops | stage.dead_letters | stage.skips]
        assert len(owners) == 1, (name, owners)
        assert reasons.stage_of(reason).name == owners[0]
    declared = set(DECLARED.values())
    assert all(stage.drops | stage.dead_letters | stage.skips <= declared for stage in ALL_STAGES)
    assert len(declared) == len(DECLARED)


def test_a_reason_no_stage_declares_is_read_the_way_older_runs_wrote_it():
    assert reasons.stage_of("a_reason_of_another_version") is reasons.READ


class _CleanDroppingDuplicates(stages.CleanBatches):
    def process(self, batch):
        self._drop_all([Drop(record, reasons.DUPLICATE_PAIR) for record in batch])
        return []


class _ReadDeadLetteringAsClean(stages.ReadBatches):
    def process(self, task):
        yield self._dead_letter(DeadLetter(reasons.EMPTY_SIDE, "", "sbert", "file", 1, "{}"))


@pytest.mark.parametrize(
    "step, reason",
    [
        (_CleanDroppingDuplicates(None, reporting.RunContext(batch_size=4, sample_size=1)), "duplicate_pair"),
        (_ReadDeadLetteringAsClean(None, reporting.RunContext(batch_size=4, sample_size=1)), "empty_side"),
    ],
)
def test_a_stage_using_a_reason_it_does_not_declare_fails_the_run_naming_both(step, reason):
    record = new_pair("sbert", "a question", "an answer", query_lang="en", passage_lang="en", origin="x:1")
    with pytest.raises(Exception, match=f"stage (clean|read) .*{reason!r}"):
        with beam.Pipeline(runner=FnApiRunner()) as pipeline:
            _ = pipeline | beam.Create([[record]]) | beam.ParDo(step).with_outputs(reporting.REPORT, reporting.DEAD)


class _HardNegativesSkippingForADropReason(reporting.ReportingDoFn):
    STAGE = reasons.HARD_NEGATIVES

    def process(self, record):
        self._count_skipped(record, reasons.DUPLICATE_PAIR, 1)
        return []


def test_skipping_candidates_for_a_reason_the_stage_does_not_declare_fails_the_run():
    step = _HardNegativesSkippingForADropReason(reporting.RunContext(batch_size=4, sample_size=1))
    with pytest.raises(Exception, match="stage hard_negatives skipped candidates for 'duplicate_pair'"):
        with beam.Pipeline(runner=FnApiRunner()) as pipeline:
            _ = pipeline | beam.Create(["sbert"]) | beam.ParDo(step).with_outputs(reporting.REPORT)
