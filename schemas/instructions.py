"""The instruction query format (E5-mistral, mE5-instruct): "Instruct: {instruction}\\nQuery: {query}".

Written by the instruction data (``mining.instruct``) and by the fine-tuning prompts
(``training.prompts``), read back by the latter; these two functions are the format.
"""

INSTRUCTION_MARK = "Instruct: "
QUERY_MARK = "\nQuery: "


def format_instructed_query(instruction: str, query: str) -> str:
    """The query with its instruction in front, on two lines."""
    return f"{INSTRUCTION_MARK}{instruction}{QUERY_MARK}{query}"


def parse_instructed_query(text: str) -> tuple[str, str] | None:
    """(instruction, query) of a text in the format, None for any other text.

    The instruction ends at the first query mark, so this inverts ``format_instructed_query``
    exactly for every instruction without a line break followed by "Query: " (the instructions of
    instruction data have their whitespace folded); the query may hold anything.
    """
    if not text.startswith(INSTRUCTION_MARK):
        return None
    instruction, mark, query = text[len(INSTRUCTION_MARK) :].partition(QUERY_MARK)
    return (instruction, query) if mark else None
