"""The encoder spec every ``--model`` that embeds takes (the derived pipelines', the evaluation's): parsed
here once; ``pipelines.options`` checks it before any work, ``training.evaluation.load_encoder`` loads it.

- ``python:MODULE:CALLABLE``: a callable ``(texts, kind) -> 2-D array`` (ONNX, a quantised engine, an API);
- ``st:PATH``: ``SentenceTransformer(PATH)``;
- anything else: a path or hub id of a transformers encoder (a directory holding a sentence-transformers
  model and no transformers config is loaded as one, too).
"""

from dataclasses import dataclass

PYTHON_PREFIX = "python:"
SENTENCE_TRANSFORMERS_PREFIX = "st:"


@dataclass(frozen=True)
class EncoderSpec:
    text: str
    module: str | None = None  # python: specs
    callable_name: str | None = None
    path: str | None = None  # st: and transformers specs: what is read from storage (or a hub id)
    sentence_transformers: bool = False  # st: said so

    @classmethod
    def parse(cls, text: str) -> "EncoderSpec":
        """ValueError for a python: spec without module and callable, or an empty path."""
        if text.startswith(PYTHON_PREFIX):
            module, _, name = text.removeprefix(PYTHON_PREFIX).partition(":")
            if not module or not name:
                raise ValueError("python:MODULE:CALLABLE needs a module and a callable name")
            return cls(text, module=module, callable_name=name)
        explicit = text.startswith(SENTENCE_TRANSFORMERS_PREFIX)
        path = text.removeprefix(SENTENCE_TRANSFORMERS_PREFIX) if explicit else text
        if not path:
            raise ValueError("no path or model name")
        return cls(text, path=path, sentence_transformers=explicit)

    @property
    def names_a_file(self) -> bool:
        """Whether the path can only be a file or directory (not a hub id), so it must exist."""
        return self.path is not None and (self.sentence_transformers or self.path.startswith(("/", ".", "~", "gs://")))
