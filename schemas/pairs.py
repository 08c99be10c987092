"""The pair record: the row of every shard the mining pipelines write.

Inside the pipeline a record is a plain ``dict`` keyed by these names; the
underscore-prefixed keys are working state that never reaches a shard.
"""

import pyarrow as pa

ID = "id"
QUERY = "query"
PASSAGE = "passage"
NEGATIVES = "negatives"
SOURCE = "source"
QUERY_LANG = "query_lang"
PASSAGE_LANG = "passage_lang"
QUERY_LANG_SCORE = "query_lang_score"
PASSAGE_LANG_SCORE = "passage_lang_score"
TASK = "task"
CONSISTENCY_RANK = "consistency_rank"
# Instruction data (--pipeline instruct): the paper's template and the raw instruction.
TASK_TYPE = "task_type"
INSTRUCTION = "instruction"
# Teacher (cross-encoder) logits of a row's [passage, *negatives], for distillation: from a labelled set that
# publishes them (BGE's pos_scores/neg_scores) or from --pipeline teacher; null where a row has none.
TEACHER_SCORES = "teacher_scores"

# Working keys, dropped before writing.
DECLARED_QUERY_LANG = "_declared_query_lang"
DECLARED_PASSAGE_LANG = "_declared_passage_lang"
BILINGUAL = "_bilingual"
ORIGIN = "_origin"

PAIR_SCHEMA = pa.schema(
    [
        pa.field(ID, pa.string(), nullable=False),
        pa.field(QUERY, pa.string(), nullable=False),
        pa.field(PASSAGE, pa.string(), nullable=False),
        pa.field(NEGATIVES, pa.list_(pa.string()), nullable=False),
        pa.field(SOURCE, pa.string(), nullable=False),
        pa.field(QUERY_LANG, pa.string(), nullable=False),
        pa.field(PASSAGE_LANG, pa.string(), nullable=False),
        # fastText's probability for the recorded language; null where the
        # side was too short to identify and its language was inferred.
        pa.field(QUERY_LANG_SCORE, pa.float32(), nullable=True),
        pa.field(PASSAGE_LANG_SCORE, pa.float32(), nullable=True),
    ],
    metadata={"schema_version": "1"},
)

TEACHER_SCORES_FIELD = pa.field(TEACHER_SCORES, pa.list_(pa.float32()), nullable=True)
TEACHER_SCORE_LIMIT = 3.4028234663852886e38  # float32's largest: a larger score would be stored as infinity

# Fine-tuning rows also say which task they teach (an instruction), and may carry teacher scores.
_TASK_FIELD = pa.field(TASK, pa.string(), nullable=False)
FINETUNE_SCHEMA = PAIR_SCHEMA.append(_TASK_FIELD).append(TEACHER_SCORES_FIELD)

# Instruction rows: ``query`` is in the instruction format (``schemas.instructions``), ``task`` the instruction;
# also the template (short-long, long-short, short-short, long-long, sts, bitext) and the raw instruction.
INSTRUCT_SCHEMA = PAIR_SCHEMA.append(_TASK_FIELD).append(pa.field(TASK_TYPE, pa.string(), nullable=False)).append(
    pa.field(INSTRUCTION, pa.string(), nullable=False)
)

SCHEMA_BY_PIPELINE = {"pretrain": PAIR_SCHEMA, "finetune": FINETUNE_SCHEMA, "instruct": INSTRUCT_SCHEMA}

TEXT_FIELDS = (QUERY, PASSAGE)


def with_consistency_rank(schema: pa.Schema) -> pa.Schema:
    """The schema of a consistency-filtered run: its input's, plus the rank of each row's passage
    for its query among a random pool (1 = best). Null only in rows no filter has ranked; a
    second filter run replaces the column rather than adding another."""
    if CONSISTENCY_RANK in schema.names:
        schema = schema.remove(schema.get_field_index(CONSISTENCY_RANK))
    return schema.append(pa.field(CONSISTENCY_RANK, pa.int32(), nullable=True))


def with_teacher_scores(schema: pa.Schema) -> pa.Schema:
    """The schema of a teacher-scored run: its input's, with the ``teacher_scores`` column where it has one
    (a fine-tuning run's), else appended."""
    return schema if TEACHER_SCORES in schema.names else schema.append(TEACHER_SCORES_FIELD)


def schema_description(schema: pa.Schema = PAIR_SCHEMA) -> dict[str, str]:
    """Field name to Arrow type string, as the manifest records it."""
    return {field.name: str(field.type) for field in schema}


def shard_row(record: dict, schema: pa.Schema = PAIR_SCHEMA) -> dict:
    """The record restricted to the schema's fields."""
    return {name: record.get(name) for name in schema.names}
