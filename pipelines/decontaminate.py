"""Decontamination on the Beam engine: the excluded texts become one side input of hashes."""

import apache_beam as beam

from mining import decontaminate
from pipelines import io
from pipelines.reporting import REPORT, ReportingDoFn, RunContext
from schemas import reasons

# Excluded texts hashed together: bounds a reading worker's memory on big benchmark files.
_TEXTS_PER_PART = 8192


def excluded_files(patterns: list[str]) -> list[str]:
    files = []
    for pattern in patterns:
        matched = io.match_files(pattern)
        if not matched:
            raise FileNotFoundError(f"--exclude {pattern}: no file matches")
        files += matched
    return sorted(set(files))


def _excluded_parts(path: str):
    texts = []
    with io.open_file(path) as stream:
        for text in decontaminate.excluded_texts(path, stream):
            texts.append(text)
            if len(texts) == _TEXTS_PER_PART:
                yield decontaminate.ExcludedSet.of(texts)
                texts = []
    if texts:
        yield decontaminate.ExcludedSet.of(texts)


class _UnionExcluded(beam.CombineFn):
    def create_accumulator(self):
        return decontaminate.ExcludedSet.empty()

    def add_input(self, accumulator, part):
        return accumulator.union(part)

    def merge_accumulators(self, accumulators):
        first, *others = accumulators
        return first.union(*others)

    def extract_output(self, accumulator):
        return accumulator


class _DropContaminated(ReportingDoFn):
    STAGE = reasons.DECONTAMINATE

    def process(self, batch, excluded):
        kept, drops = decontaminate.drop_contaminated(batch, excluded)
        self._drop_all(drops)
        if kept:
            yield kept


class Decontaminate(beam.PTransform):
    """Batches of pairs -> the same without those that leak the excluded benchmark files."""

    def __init__(self, files: list[str], run: RunContext):
        super().__init__()
        self._files = files
        self._run = run

    def expand(self, batches):
        excluded = (
            batches.pipeline
            | "ExcludedFiles" >> beam.Create(self._files)
            | "Spread" >> beam.Reshuffle()
            | "Hash" >> beam.FlatMap(_excluded_parts)
            | "Union" >> beam.CombineGlobally(_UnionExcluded())
        )
        return batches | "DropContaminated" >> beam.ParDo(
            _DropContaminated(self._run), excluded=beam.pvalue.AsSingleton(excluded)
        ).with_outputs(REPORT, main="pairs")
