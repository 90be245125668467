"""edgestill.markdown: the one table printer of benchmarks, the side tools and export.arm64."""

from __future__ import annotations

from edgestill.markdown import cell, table, table_text


def test_table_golden():
    text = table_text(["model", "tok/s", "note"], [["tiny-int8", 41.25, None], ["a|b", 3, "two\nlines"]])
    assert text == ("| model | tok/s | note |\n"
                    "|---|---|---|\n"
                    "| tiny-int8 | 41.25 | - |\n"
                    "| a\\|b | 3 | two lines |\n")


def test_table_without_rows_is_header_and_separator():
    assert table(("a", "b"), []) == ["| a | b |", "|---|---|"]


def test_cell_keeps_numbers_and_flattens_carriage_returns():
    assert cell(0) == "0" and cell(False) == "False" and cell("x\r\ny") == "x  y"
