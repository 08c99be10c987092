"""What is put in front of a text before it is tokenised.

E5 models are trained and used with a fixed prefix per side, "query: " and
"passage: " (a symmetric task, such as bitext, uses "query: " on both). The
instruction format of the fine-tuning stage ("Instruct: {task}\\nQuery: {q}",
as in E5-mistral and mE5-instruct) is ``InstructPrompts``, another
implementation of ``format``; the loader and the encoder only call that
method, with the row's task where the data has one.
"""

import re
from dataclasses import dataclass
from typing import Literal

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


INSTRUCT = "Instruct: "
_QUERY_MARK = "\nQuery: "
DEFAULT_TASK = "Given a web search query, retrieve relevant passages that answer the query"


@dataclass(frozen=True)
class InstructPrompts:
    """Instructions on the query side only: "Instruct: {task}\\nQuery: {query}"; passages get a plain prefix.

    ``task`` is the instruction of texts that come without one (rows without a
    ``task`` column, and ``encode`` at evaluation). A query that already starts
    with "Instruct: " (instruction data formats its own) is left as it is, so
    the instruction is applied exactly once.
    """

    task: str = DEFAULT_TASK
    passage: str = ""

    @property
    def query(self) -> str:
        """The default task's query prefix, as sentence-transformers stores prompts."""
        return INSTRUCT + self.task + _QUERY_MARK

    def format(self, text: str, kind: Kind, task: str | None = None) -> str:
        if kind == "query":
            return text if text.startswith(INSTRUCT) else INSTRUCT + (task or self.task) + _QUERY_MARK + text
        return self.prefix(kind) + text

    def prefix(self, kind: Kind) -> str:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        return self.query if kind == "query" else self.passage


def stored_prompts(query: str, passage: str) -> Prompts | InstructPrompts:
    """The prompts a checkpoint stored as prefixes: an instruction query prefix means ``InstructPrompts``."""
    match = re.fullmatch(re.escape(INSTRUCT) + r"(.+)" + re.escape(_QUERY_MARK), query, flags=re.DOTALL)
    return InstructPrompts(match.group(1), passage) if match else Prompts(query, passage)
