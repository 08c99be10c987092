"""What is put in front of a text before it is tokenised.

E5 models are trained and used with a fixed prefix per side, "query: " and
"passage: " (a symmetric task, such as bitext, uses "query: " on both). The
instruction format of the fine-tuning stage ("Instruct: {task}\\nQuery: {q}")
is another implementation of ``format``; the loader and the encoder only call
that method.
"""

from dataclasses import dataclass
from typing import Literal

Kind = Literal["query", "passage"]
KINDS: tuple[Kind, ...] = ("query", "passage")


@dataclass(frozen=True)
class Prompts:
    query: str = "query: "
    passage: str = "passage: "

    def format(self, text: str, kind: Kind) -> str:
        return self.prefix(kind) + text

    def prefix(self, kind: Kind) -> str:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        return self.query if kind == "query" else self.passage


E5 = Prompts()
