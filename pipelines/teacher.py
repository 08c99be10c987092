"""``--pipeline teacher``: a finished run's rows with ``teacher_scores``, a cross-encoder's logits of each row's
(query, passage) and (query, negative) pairs, aligned with ``[passage, *negatives]``, for distillation.

shards -> groups of about --batch-size rows fixed by their ids (``derived.FixedGroups``) -> RunInference, a group an
example, scored --encode-batch-size pairs per model call -> rows with their scores -> shards + manifest, which
records the teacher's name and a hash of its weights.
"""

from dataclasses import dataclass

import apache_beam as beam
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference

from mining import teacher
from mining.records import Drop
from pipelines import io, reporting, stages
from pipelines.derived import (
    FinishedRun, FixedGroups, check_options, on_this_machine, parent_schema, read_records, read_run,
    without_weight_bars,
)
from pipelines.options import MiningOptions
from schemas import pairs as f
from schemas import reasons
from schemas.manifest import Teacher
from schemas.pairs import with_teacher_scores


@dataclass(frozen=True)
class TeacherPlan:
    run: FinishedRun
    teacher: Teacher


def cross_encoder_identity(option: str, spec: str) -> Teacher:
    """``training.cross_encoder.teacher_identity``, its ValueError naming the option; a remote checkpoint is
    hashed in this machine's copy of it, and recorded by its own path."""
    from training.cross_encoder import teacher_identity  # torch only where a cross-encoder runs

    try:
        return teacher_identity(on_this_machine(spec)).model_copy(update={"model": spec})
    except (ValueError, FileNotFoundError) as error:
        raise ValueError(f"{option} {spec}: {error}") from None


def plan(options: MiningOptions) -> TeacherPlan:
    check_options(options)
    run = read_run(options.input, "--input")
    return TeacherPlan(run, cross_encoder_identity("--model", options.model))


class CrossEncoderHandler(ModelHandler[tuple[dict, ...], PredictionResult, object]):
    """RunInference's model: ``training.cross_encoder.load_cross_encoder``, loaded once per worker. An example is
    one group of rows (``FixedGroups``); its inference, each row's scores of [passage, *negatives]."""

    def __init__(self, identity: Teacher, device: str | None, encode_batch_size: int, logits: bool = True):
        super().__init__()
        self._identity = identity
        self._device = device
        self._encode_batch_size = encode_batch_size
        self._logits = logits

    def load_model(self):
        from training.cross_encoder import load_cross_encoder

        without_weight_bars(self._identity.model)
        identity = self._identity.model_copy(update={"model": on_this_machine(self._identity.model)})
        return load_cross_encoder(identity, self._device, self._encode_batch_size, self._logits)

    def run_inference(self, batch, model, inference_args=None):
        return [
            PredictionResult(group, teacher.score_rows(model, list(group), self._encode_batch_size)) for group in batch
        ]

    def share_model_across_processes(self) -> bool:
        return self._device == "cuda"

    def batch_elements_kwargs(self):
        # A group is already the batch: merging groups would make what a call sees depend on the runner.
        return {"min_batch_size": 1, "max_batch_size": 1}


class AttachScores(reporting.ReportingDoFn):
    """A scored group -> its rows with ``teacher_scores``; a row with a non-finite score dropped."""

    STAGE = reasons.TEACHER

    def process(self, result: PredictionResult):
        for record, scores in zip(result.example, result.inference, strict=True):
            self._report.count_input(record[f.SOURCE])
            item = teacher.attach(record, scores)
            if isinstance(item, Drop):
                self._drop_all([item])
            else:
                yield item


def recorded_options(options: MiningOptions) -> dict:
    return {
        "derived_by": "teacher",
        "input": options.input,
        "model": options.model,
        "batch_size": options.batch_size,
        "encode_batch_size": options.encode_batch_size,
        **options.recorded_output_options(),
    }


def build(pipeline: beam.Pipeline, options: MiningOptions, plan: TeacherPlan, destination: io.Destination) -> None:
    run = plan.run
    parent_pipeline = run.manifest.pipeline
    schema = with_teacher_scores(parent_schema(run))
    context = options.run_context()
    handler = CrossEncoderHandler(plan.teacher, options.device, options.encode_batch_size)
    scored = (
        read_records(pipeline, run, "Input")
        | "Group" >> FixedGroups(run.manifest.totals.output, options.batch_size)
        | "Score" >> RunInference(handler)
        | "Attach" >> beam.ParDo(AttachScores(context)).with_outputs(reporting.REPORT, main="rows")
    )
    shard_entries = scored.rows | "WriteShards" >> stages.WriteShards.for_options(options, schema, destination)
    (shard_entries, scored[reporting.REPORT]) | "Manifest" >> stages.WriteManifest(
        destination, parent_pipeline, schema, recorded_options(options), options.sampling_alpha, context,
        parent=run.parent, teacher=plan.teacher,
    )
