"""Natural-language inference sets: SNLI/MNLI JSON lines, or SNLI/MNLI/XNLI TSV with a header row.

Rows with the same premise (and language) join through a shuffle. Each
entailment row is a candidate, (premise, hypothesis), with the premise's
contradictions as hard negatives; neutral and unlabelled rows are no
candidates. XNLI's ``language`` column declares each row's language.
"""

import posixpath

from mining.sources import register
from mining.sources.base import (
    JoiningReader, JoinPart, JsonLinesReader, declared_language, require_object, require_text,
)

ENTAILMENT, CONTRADICTION = "entailment", "contradiction"
_TSV_SUFFIXES = (".tsv", ".txt")


@register
class NliReader(JoiningReader, JsonLinesReader):
    kind = "nli"
    passage_dedup = False
    task = "Given a premise, retrieve a hypothesis that is entailed by the premise"

    def parse(self, value, task, origin):
        require_object(value)
        label = value.get("gold_label", value.get("label"))
        if label not in (ENTAILMENT, CONTRADICTION):
            return []
        premise = require_text(value, "sentence1", "premise")
        hypothesis = require_text(value, "sentence2", "hypothesis")
        lang = declared_language(value.get("language"), task.lang)
        part = {"premise": premise, "hypothesis": hypothesis, "lang": lang, "origin": origin}
        return JoinPart(f"{task.spec}|{lang}|{premise}", label, part)

    def read(self, task, open_file, limits):
        for path in task.paths:
            if posixpath.splitext(path.removesuffix(".gz"))[1].lower() in _TSV_SUFFIXES:
                yield from self._read_tsv(task, path, open_file, limits)
            else:
                yield from self._read_file(task, path, open_file, limits)

    def _read_tsv(self, task, path, open_file, limits):
        yield from self.row_records(path, open_file, limits, lambda row, origin: self.parse(row, task, origin))

    def join(self, round_index, key, parts):
        parts = sorted(parts, key=lambda part: part.value["origin"])
        negatives = [part.value["hypothesis"] for part in parts if part.role == CONTRADICTION]
        for part in parts:
            if part.role == ENTAILMENT:
                value = part.value
                yield self.pair(
                    value["premise"], value["hypothesis"], negatives=negatives,
                    query_lang=value["lang"], passage_lang=value["lang"], origin=value["origin"],
                )
