"""Source readers, one module per kind; a module registers its reader with ``@register``.

Adding a kind is adding a module here: every module in this package is
imported when the registry is first used.
"""

import functools
import importlib
import pkgutil

from mining.sources.base import ReadLimits, ReadTask, SourceReader, SourceSpec

__all__ = ["ReadLimits", "ReadTask", "SourceReader", "SourceSpec", "get_reader", "kinds", "register"]

_READERS: dict[str, SourceReader] = {}


def register(cls: type[SourceReader]) -> type[SourceReader]:
    if cls.kind in _READERS:
        raise ValueError(f"two readers for source kind {cls.kind!r}")
    _READERS[cls.kind] = cls()
    return cls


@functools.cache
def _discover() -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def kinds() -> list[str]:
    _discover()
    return sorted(_READERS)


def get_reader(kind: str) -> SourceReader:
    if kind not in kinds():
        raise ValueError(f"unknown source kind {kind!r}; known: {', '.join(kinds())}")
    return _READERS[kind]
