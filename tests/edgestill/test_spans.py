"""edgestill/spans.py: the whole-word rule a copied value follows (shared by the runtime's fields
automaton and the recipe's seed check)."""

import pytest

from edgestill.spans import is_word_span, word_edges


@pytest.mark.parametrize("value, text, whole", [
    ("6:15 am", "Meet at 6:15 am.", True),
    ("15 am", "Meet at 6:15 am.", False),         # starts inside "6:15"
    ("Meet a", "Meet at 6:15 am.", False),        # ends inside "at"
    ("am.", "Meet at 6:15 am.", True),            # trailing punctuation may be kept
    ("room 204", "See you in (room 204), ok?", True),
    ("(room 204),", "See you in (room 204), ok?", True),
    ("room 204)", "See you in (room 204), ok?", True),
    (" room", "See you in room 204", False),      # starts on a space
    ("東京", "明日東京で会いましょう", True),        # no spaces: every character edge
    ("", "anything", False),
    ("Friday", "Lunch on Fridays", False),
    ("Friday", "Fridays are busy, but Friday works", True),  # a later occurrence is whole
])
def test_is_word_span(value, text, whole):
    assert is_word_span(value, text) is whole


def test_word_edges_are_byte_offsets():
    starts, ends = word_edges("Café at 7".encode())
    assert 0 in starts and len("Café".encode()) in ends and 4 not in ends  # é takes two bytes
    assert starts == {0, 6, 9} and ends == {5, 8, 10}
