"""The one Markdown table printer every stage prints through (stdlib only).

    from edgestill.markdown import table, table_text
    print(table_text(["model", "tok/s"], [["default-int8", 41.2]]))

Header cells are written as given; body cells are made safe for one table cell (no pipes, no
newlines) and `None` prints as `-`.
"""

from __future__ import annotations

from typing import Iterable, Sequence


def cell(text) -> str:
    """A value made safe for one Markdown table cell (no pipes, no newlines); None is `-`."""
    if text is None:
        return "-"
    return str(text).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def table(header: Sequence[str], rows: Iterable[Sequence]) -> list[str]:
    """The table's lines: header, separator, one line per row."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]


def table_text(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """`table` joined into text, ending with a newline."""
    return "\n".join(table(header, rows)) + "\n"
