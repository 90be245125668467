"""Whole-word spans of a text: where a value copied from an input (`task.verbatim`) may start and
end. The runtime's fields automaton (`edgestill.runtime.fields`) holds values to these edges while
decoding; the recipe check holds the seeds to the same rule. Standard library only.

    word_edges(b"(room 204), 6:15 am")   # (starts, ends) as byte offsets
    is_word_span("6:15 am", "Meet at 6:15 am.")   # True; "15 am" and "Meet a" are not
"""

from __future__ import annotations

import re

PUNCT = bytes(b for b in range(0x21, 0x7F) if not chr(b).isalnum())  # ASCII punctuation and symbols


def word_edges(text: bytes) -> tuple[set[int], set[int]]:
    """(Where a verbatim value may start, where it may end) in `text`, as byte offsets: at the edges
    of each run of non-space bytes and anywhere inside its leading or trailing ASCII punctuation
    ("(room 204)," gives "room 204", "(room 204)" and "(room 204),"; "6:15 am" never gives "15 am",
    "8 a.m.," gives "8 a.m."), and at every character edge of a run with no ASCII letter or digit
    (scripts written without spaces)."""
    starts, ends = set(), set()
    for m in re.finditer(rb"\S+", text):
        a, b = m.span()
        core = m.group().strip(PUNCT)
        lead = len(m.group()) - len(m.group().lstrip(PUNCT))
        starts.update(range(a, a + lead + 1) if core else range(a, b))
        ends.update(range(a + lead + len(core), b + 1) if core else range(a + 1, b + 1))
        if not any(chr(c).isalnum() for c in m.group() if c < 0x80):  # e.g. CJK: every character edge
            starts.update(range(a, b))
            ends.update(range(a + 1, b + 1))
    return starts, ends


def is_word_span(value: str, text: str) -> bool:
    """Whether non-empty `value` occurs in `text` starting and ending on word edges (`word_edges`)."""
    src, data = text.encode("utf-8"), value.encode("utf-8")
    if not data:
        return False
    starts, ends = word_edges(src)
    at = src.find(data)
    while at >= 0:
        if at in starts and at + len(data) in ends:
            return True
        at = src.find(data, at + 1)
    return False
