"""The instruction query format: one writer and one reader, exact inverses, shared by mining and training."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mining import instruct
from mining.records import DeadLetter
from schemas import pairs as f
from schemas import removed
from schemas.instructions import QUERY_MARK, format_instructed_query, parse_instructed_query
from training.prompts import InstructPrompts, Prompts, stored_prompts

# Instructions as instruction data holds them: whitespace folded, so never a line break.
_INSTRUCTIONS = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"))


@given(instruction=_INSTRUCTIONS, query=st.text(st.characters(blacklist_categories=("Cs",))))
def test_parse_inverts_format(instruction, query):
    assert parse_instructed_query(format_instructed_query(instruction, query)) == (instruction, query)


def test_a_query_may_hold_the_query_mark():
    text = format_instructed_query("Find the answer", f"first{QUERY_MARK}second")
    assert parse_instructed_query(text) == ("Find the answer", f"first{QUERY_MARK}second")


@pytest.mark.parametrize(
    "text",
    ["who?", "query: who?", "Instruct: Find the answer", "instruct: Find\nQuery: who?", " Instruct: Find\nQuery: who?",
     "Instruct: Find\nquery: who?", ""],
)
def test_other_texts_are_not_instructed_queries(text):
    assert parse_instructed_query(text) is None


def test_a_text_that_only_starts_like_an_instruction_gets_one():
    """Only a query in the format is left as it is: a mere "Instruct: " at its start is the user's text."""
    prompts = InstructPrompts("Find the answer")
    assert prompts.format("Instruct: me", "query") == "Instruct: Find the answer\nQuery: Instruct: me"


def test_training_keeps_the_queries_instruction_data_formats():
    record = {f.QUERY: "how do bees make honey", f.INSTRUCTION: "Find a document that answers the question"}
    query = instruct.format_row(record)[f.QUERY]
    assert parse_instructed_query(query) == (record[f.INSTRUCTION], record[f.QUERY])
    assert InstructPrompts("Another task").format(query, "query", "Row task") == query


@pytest.mark.parametrize("task", ["Find the answer", "Retrieve: passages\nfor a query", " ", f"Two{QUERY_MARK}marks"])
def test_stored_instruction_prefix_reads_back(task):
    prompts = InstructPrompts(task, passage="doc: ")
    assert stored_prompts(prompts.query, prompts.passage) == prompts


@pytest.mark.parametrize("query", ["query: ", "Instruct: \nQuery: ", "Instruct: Find the answer", "Find\nQuery: "])
def test_other_stored_prefixes_are_fixed_prompts(query):
    assert stored_prompts(query, "passage: ") == Prompts(query, "passage: ")


def test_dead_letter_row_has_the_schema_fields():
    letter = DeadLetter.of("invalid_json", "no object", "msmarco", "in.jsonl", 3, b"{")
    assert letter.to_dict() == dict(
        zip(removed.DEAD_LETTER_FIELDS, ("invalid_json", "no object", "msmarco", "in.jsonl", 3, "{"), strict=True)
    )
