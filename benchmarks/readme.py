"""The README's "Current results" section, generated from a benchmark report (never typed by hand).

    python -m edgestill.benchmarks.readme build/default/report/report.json README.md   # or: make readme

Replaces what lies between the lines `<!-- results:start -->` and `<!-- results:end -->` with the
report's machine, settings, headline table and student-vs-teacher ratios (the same printers as
report.md); the rest of the file is left as it is. Written atomically.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgestill.benchmarks.markdown import COLUMNS, model_row, ratio_lines, settings_line
from edgestill.errors import UserError, cli_main
from edgestill.files import atomic_write_text
from edgestill.machine import one_line
from edgestill.markdown import table

START, END = "<!-- results:start -->", "<!-- results:end -->"


def section(report: dict) -> str:
    """The generated lines: where and how it was measured, the headline table, the ratios."""
    lines = [f"Generated from `{report['settings'].get('recipe', '')}`'s benchmark report by `make readme`.", "",
             f"**Machine:** {one_line(report['machine'])}", "",
             f"**Settings:** {settings_line(report['settings'])}", "",
             *table(COLUMNS, [model_row(m) for m in report["models"]])]
    if report.get("ratios"):
        lines += ["", *ratio_lines(report["ratios"])]
    return "\n".join(lines)


def update(text: str, report: dict, where: str = "README.md") -> str:
    """`text` with its results section replaced; UserError when the markers are missing or misplaced."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise UserError(f"{where}: no `{START}` ... `{END}` lines to put the results between; add them")
    return text[:start + len(START)] + "\n" + section(report) + "\n" + text[end:]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgestill.benchmarks.readme", description=__doc__.split("\n")[0])
    parser.add_argument("report", help="a benchmark report.json (build/<name>/report/report.json)")
    parser.add_argument("readme", help="the Markdown file to update (README.md)")
    args = parser.parse_args(argv)
    report_path, readme = Path(args.report), Path(args.readme)
    if not report_path.is_file():
        raise UserError(f"{report_path} not found; run `make student` (or `edgestill bench RECIPE`) first")
    if not readme.is_file():
        raise UserError(f"{readme} not found")
    report = json.loads(report_path.read_text(encoding="utf-8"))
    atomic_write_text(readme, update(readme.read_text(encoding="utf-8"), report, str(readme)))
    print(f"{readme}: results section from {report_path}")
    return 0


if __name__ == "__main__":
    cli_main(main)
