"""Text laid out in columns for a terminal: a class named 猫 takes two columns a character."""

from __future__ import annotations

import unicodedata


def columns(text: str) -> int:
    """How many terminal columns ``text`` takes (East Asian wide and full-width characters: two)."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def ljust(text: str, width: int) -> str:
    """``text`` padded with spaces to ``width`` terminal columns (``str.ljust`` counts characters)."""
    return text + " " * max(0, width - columns(text))


_CONTROL = {i: f"\\x{i:02x}" for i in (*range(32), 127)} | {ord("\n"): "\\n", ord("\t"): "\\t", ord("\r"): "\\r"}


def printable(name: object) -> str:
    """``name`` (a file name) with its control characters written as escapes (``\\n``, ``\\x1b``):
    one name, one line, whatever bytes it holds (a newline in a name split a "one line per file"
    output, as ``ls -b`` avoids)."""
    return str(name).translate(_CONTROL)
