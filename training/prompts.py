"""What is put in front of a text before it is tokenised.

E5 models are trained and used with a fixed prefix per side, "query: " and
"passage: " (a symmetric task, such as bitext, uses "query: " on both). The
instruction format of the fine-tuning stage ("Instruct: {task}\\nQuery: {q}",
as in E5-mistral and mE5-instruct) is ``InstructPrompts``, another
implementation of ``format``; the loader and the encoder only call that
method, with the row's task where the data has one.
"""

from dataclasses import dataclass
from typing import Literal

from schemas.instructions import INSTRUCTION_MARK, QUERY_MARK, format_instructed_query, parse_instructed_query

Kind = Literal["query", "passage"]
KINDS: tuple[Kind, ...] = ("query", "passage")


@dataclass(frozen=True)
class Prompts:
    query: str = "query: "
    passage: str = "passage: "

    def format(self, text: str, kind: Kind, task: str | None = None) -> str:
        """``task`` (a row's instruction) is for instruction formats; fixed prefixes ignore it."""
        return self.prefix(kind) + text

    def prefix(self, kind: Kind) -> str:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        return self.query if kind == "query" else self.passage


E5 = Prompts()


DEFAULT_TASK = "Given a web search query, retrieve relevant passages that answer the query"


@dataclass(frozen=True)
class InstructPrompts:
    """Instructions on the query side only: "Instruct: {task}\\nQuery: {query}"; passages get a plain prefix.

    ``task`` is the instruction of texts that come without one (rows without a
    ``task`` column, and ``encode`` at evaluation). A query already in the
    format (instruction data formats its own) is left as it is, so the
    instruction is applied exactly once.
    """

    task: str = DEFAULT_TASK
    passage: str = ""

    @property
    def query(self) -> str:
        """The default task's query prefix, as sentence-transformers stores prompts."""
        return format_instructed_query(self.task, "")

    def format(self, text: str, kind: Kind, task: str | None = None) -> str:
        if kind == "query":
            if parse_instructed_query(text) is not None:
                return text
            return format_instructed_query(task or self.task, text)
        return self.prefix(kind) + text

    def prefix(self, kind: Kind) -> str:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        return self.query if kind == "query" else self.passage


def stored_prompts(query: str, passage: str) -> Prompts | InstructPrompts:
    """The prompts a checkpoint stored as prefixes: an instruction query prefix means ``InstructPrompts``."""
    # Cut at both ends, not parsed: a stored task may hold anything, the query mark too.
    task = query.removeprefix(INSTRUCTION_MARK).removesuffix(QUERY_MARK)
    if task and query == format_instructed_query(task, ""):
        return InstructPrompts(task, passage)
    return Prompts(query, passage)
