"""Every reason a record leaves a run, under the stage that decides it; and every reason a stage
skips something that is not a record (a mined candidate), counted apart from the records.

The contract between the stages that drop and dead-letter records (``mining/``, ``pipelines/``) and
what reads a finished run (the manifest's counts, ``inspection``): a stage may only use the reasons it
declares here, and the funnel a run is summarised by is ``MINING_FUNNEL``'s order.
"""

from dataclasses import dataclass

# Dead letters: a record its reader cannot take, kept with its payload.
INVALID_UTF8 = "invalid_utf8"
INVALID_JSON = "invalid_json"
TRUNCATED_JSON = "truncated_json"
LINE_TOO_LONG = "line_too_long"
WRONG_TYPE = "wrong_type"
MISSING_FIELD = "missing_field"
INVALID_LANGUAGE = "invalid_language"
MISALIGNED = "misaligned_line"
UNREADABLE = "unreadable_file"
UNKNOWN_TASK_TYPE = "unknown_task_type"
# An exception no rule of the reader foresaw, named in the detail: the record is kept
# as a dead letter and the run goes on.
READER_ERROR = "reader_error"

# Drops by a source's own rules, decided while reading (and joining) it.
UNANSWERABLE = "unanswerable"  # squad
DELETED = "deleted"  # reddit
LOW_SCORE = "low_score"
BODY_TOO_LONG = "body_too_long"
PARENT_MISSING = "parent_missing"
PARENT_FILTERED = "parent_filtered"
NO_ANSWER = "no_answer"  # stackexchange, eli5
NO_GOOD_ANSWER = "no_good_answer"
NO_TITLE = "no_title"  # mc4
DOC_MISSING = "doc_missing"  # qrels-based sets
QUERY_MISSING = "query_missing"
NO_POSITIVE = "no_positive"  # labelled sets whose record lists no positive passage (dpr, mrtydi)
NOT_DUPLICATE = "not_duplicate"  # quora
# LLM-generated examples: the template's content rules.
EMPTY_INSTRUCTION = "empty_instruction"
EMPTY_FIELD = "empty_field"
UNFILLED_PLACEHOLDER = "unfilled_placeholder"
TOO_SHORT_FOR_TEMPLATE = "too_short_for_template"
TOO_LONG_FOR_TEMPLATE = "too_long_for_template"
NEGATIVE_EQUALS_POSITIVE = "negative_equals_positive"
INSTRUCTION_COPIES_QUERY = "instruction_copies_query"

# Drops by the mining stages after reading.
EMPTY_SIDE = "empty_side"
TOO_LONG = "too_long"
IDENTICAL_SIDES = "identical_sides"
CONTAMINATED = "contaminated"
LOW_CONFIDENCE = "lang_low_confidence"
DECLARED_MISMATCH = "lang_declared_mismatch"
PAIR_MISMATCH = "lang_pair_mismatch"
DUPLICATE_PAIR = "duplicate_pair"
DUPLICATE_PASSAGE = "duplicate_passage"
NEAR_DUPLICATE = "near_duplicate"
# Drops by a pipeline over a finished run.
INCONSISTENT = "inconsistent"
# Generation (--pipeline generate): prompts that yield no generation, dead-lettered with the prompt.
LLM_RETRIES_EXHAUSTED = "llm_retries_exhausted"  # 429, 5xx, timeouts or broken bodies past --llm-max-retries
LLM_REQUEST_REFUSED = "llm_request_refused"  # another 4xx: retrying would not help
UNPARSEABLE_TASK_LIST = "unparseable_task_list"  # a brainstorm response with no list of tasks
NO_TASKS = "no_tasks"  # a generation whose task type's brainstorm left no task to draw
# Teacher scoring (--pipeline teacher): a row the teacher scored NaN or infinite is no distillation target.
NONFINITE_TEACHER_SCORE = "nonfinite_teacher_score"
# Hard-negative candidates inside the rank window skipped as likely false negatives (not records).
ABOVE_MAX_SCORE = "above_max_score"
WITHIN_RELATIVE_MARGIN = "within_relative_margin"


@dataclass(frozen=True)
class Stage:
    """A step of a run and the reasons it may drop (and dead-letter) records for, or skip candidates for."""

    name: str
    drops: frozenset[str]
    dead_letters: frozenset[str] = frozenset()
    skips: frozenset[str] = frozenset()


READ = Stage(
    "read",
    frozenset({
        UNANSWERABLE, DELETED, LOW_SCORE, BODY_TOO_LONG, PARENT_MISSING, PARENT_FILTERED, NO_ANSWER, NO_GOOD_ANSWER,
        NO_TITLE, DOC_MISSING, QUERY_MISSING, NO_POSITIVE, NOT_DUPLICATE, EMPTY_INSTRUCTION, EMPTY_FIELD,
        UNFILLED_PLACEHOLDER, TOO_SHORT_FOR_TEMPLATE, TOO_LONG_FOR_TEMPLATE, NEGATIVE_EQUALS_POSITIVE,
        INSTRUCTION_COPIES_QUERY,
    }),
    frozenset({
        INVALID_UTF8, INVALID_JSON, TRUNCATED_JSON, LINE_TOO_LONG, WRONG_TYPE, MISSING_FIELD, INVALID_LANGUAGE,
        MISALIGNED, UNREADABLE, UNKNOWN_TASK_TYPE, READER_ERROR,
    }),
)
CLEAN = Stage("clean", frozenset({EMPTY_SIDE, TOO_LONG, IDENTICAL_SIDES}))
DECONTAMINATE = Stage("decontaminate", frozenset({CONTAMINATED}))
LANGUAGE_ID = Stage("language_id", frozenset({LOW_CONFIDENCE, DECLARED_MISMATCH, PAIR_MISMATCH}))
DEDUP = Stage("dedup", frozenset({DUPLICATE_PAIR, DUPLICATE_PASSAGE}))
NEAR_DUP = Stage("near_dup", frozenset({NEAR_DUPLICATE}))
# Writing formats instruction rows and counts their instructions; it drops nothing.
WRITE = Stage("write", frozenset())
CONSISTENCY = Stage("consistency", frozenset({INCONSISTENT}))
# Attaches mined negatives to every row; it drops nothing, but may skip candidates.
HARD_NEGATIVES = Stage("hard_negatives", frozenset(), skips=frozenset({ABOVE_MAX_SCORE, WITHIN_RELATIVE_MARGIN}))
TEACHER = Stage("teacher", frozenset({NONFINITE_TEACHER_SCORE}))

GENERATE = Stage(
    "generate", frozenset(), frozenset({LLM_RETRIES_EXHAUSTED, LLM_REQUEST_REFUSED, UNPARSEABLE_TASK_LIST, NO_TASKS})
)

MINING_FUNNEL = (READ, CLEAN, DECONTAMINATE, LANGUAGE_ID, DEDUP, NEAR_DUP)
# After every mining stage: the filters of a finished run.
FILTERS = (CONSISTENCY, TEACHER)
# The steps of a generation run (its manifest's ``generation`` counts them, not the funnel).
GENERATION = (GENERATE,)


def stage_of(reason: str) -> Stage:
    """The stage that decides ``reason``; ``READ`` for one no stage declares (a run by another version)."""
    for stage in (*MINING_FUNNEL, *FILTERS, HARD_NEGATIVES, *GENERATION):
        if reason in stage.drops or reason in stage.dead_letters or reason in stage.skips:
            return stage
    return READ
