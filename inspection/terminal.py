"""Text from a run made safe to print: whatever a manifest or a row holds shows, never drives the terminal."""

import re

# Characters that would drive a terminal rather than show (ANSI escapes, bidi overrides,
# zero-width marks, line separators) or cannot be printed at all (lone surrogates).
_CONTROLS = "\x00-\x09\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ud800-\udfff"
_UNSAFE = re.compile(f"[{_CONTROLS}]")
_ESCAPED = re.compile(f"[{_CONTROLS}\n]")


def _escape(match: re.Match) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


def terminal_safe(text: str) -> str:
    """``text`` with every character that could drive the terminal written as an escape; line breaks kept."""
    return _UNSAFE.sub(_escape, text)


def clipped_line(text, width: int) -> str:
    """One line of at most ``width`` characters: line breaks inside are shown escaped."""
    text = _ESCAPED.sub(_escape, str(text))
    return text if len(text) <= width else text[: width - 1] + "…"
