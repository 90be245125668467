"""The README's "Current results" section, generated from a benchmark report (never typed by hand).

    python -m edgestill.benchmarks.readme build/default/report/report.json README.md   # or: make readme

Replaces what lies between the lines `<!-- results:start -->` and `<!-- results:end -->` with the
report's machine, settings, headline table and student-vs-teacher ratios (the same printers as
report.md); the rest of the file is left as it is. Written atomically. The table leads with the
ground-truth score and the retention of the teacher's score (`report["headline"]`,
benchmarks/headline.py; ROUGE-L vs the teacher follows for free text), then size, latency and
memory; a report without a headline gets the older per-model table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgestill.benchmarks.markdown import (
    headline_cells,
    headline_columns,
    number,
    params_text,
    ratio_lines,
    rouge_vs_teacher,
    with_retention,
)
from edgestill.errors import UserError, cli_main
from edgestill.files import atomic_write_text
from edgestill.markdown import table

START, END = "<!-- results:start -->", "<!-- results:end -->"


README_COLUMNS = ("model", "precision", "params", "size MB", "peak RSS MB", "TTFT ms", "decode tok/s",
                  "ROUGE-L vs teacher (95% CI)", "ground truth (95% CI)")


def ground_truth(quality: dict) -> str:
    """Accuracy (label task) or ROUGE-L against the references (free text), with its interval."""
    for key, name in (("accuracy_vs_label", "accuracy"), ("rouge_l_vs_label", "ROUGE-L")):
        if quality.get(key) is not None:
            lo, hi = quality.get(f"{key}_ci95_lo"), quality.get(f"{key}_ci95_hi")
            span = f" ({lo:.3f}-{hi:.3f})" if lo is not None and hi is not None else ""
            return f"{name} {quality[key]:.3f}{span}"
    return "–"


def readme_row(m: dict) -> list[str]:
    """One model of the headline: what a newcomer compares (no commit, no run date)."""
    q, size = m.get("quality") or {}, (m["file_bytes"] / 1e6 if m.get("file_bytes") is not None else None)
    return [m.get("label") or m["name"], number(m.get("precision")), params_text(m.get("params")), number(size),
            number(m.get("peak_rss_mb")), number(m.get("ttft_ms_p50")), number(m.get("decode_tok_s_p50")),
            rouge_vs_teacher(m, q), ground_truth(q)]


def headline_table(headline: dict) -> list[str]:
    """The headline rows: ground truth and retention first, then size and request latency, and for
    the bundles peak RSS and decode speed."""
    columns = [c for c in headline_columns(headline) if c != "what"] + ["peak RSS MB", "decode tok/s"]
    rows = [[r["name"], *headline_cells(headline, r), number(r.get("peak_rss_mb")), number(r.get("decode_tok_s_p50"))]
            for r in headline["rows"]]
    retention = (f"; retention = the score ÷ {headline['reference']}'s, paired 95% bootstrap interval over the "
                 "same examples" if with_retention(headline) else "")
    return [f"**{headline['name']}** on {headline.get('examples')} held-out examples{retention}.", "",
            *table(columns, rows)]


def section(report: dict) -> str:
    """The generated lines: where and how it was measured, the headline table, the student-vs-teacher ratios."""
    machine, s = report["machine"], report["settings"]
    ours = {m.get("label") or m["name"] for m in report["models"]}
    headline = report.get("headline")
    lines = [f"Recipe `{s.get('recipe', '')}`, measured by `make student` and written here by `make readme`: "
             f"{machine.get('cpu')} ({machine.get('cores_logical')} cores), onnxruntime {machine.get('onnxruntime')}; "
             f"{s.get('threads')} threads, {s.get('prompt_tokens')}-token prompt + {s.get('gen_tokens')} generated "
             f"tokens, median of {s.get('repetitions')}; quality on {s.get('quality_examples')} held-out inputs.", "",
             *(headline_table(headline) if headline else
               table(README_COLUMNS, [readme_row(m) for m in report["models"]]))]
    ratios = {name: r for name, r in (report.get("ratios") or {}).items() if name in ours}
    if ratios:
        lines += ["", *ratio_lines(ratios)]
    llama = [n for n in report.get("notes") or [] if n.startswith("llama.cpp gguf-")]  # report.llama_cpp_vs_ours
    if llama:
        lines += ["", *[f"- {n}" for n in llama]]
    return "\n".join(lines)


def markers(text: str, recipe: str) -> tuple[str, str]:
    """The recipe's own section markers (`<!-- results:NAME:start -->`) when `text` has them, else the
    plain ones: one README can show several recipes, each regenerated from its own report."""
    named = f"<!-- results:{recipe}:start -->", f"<!-- results:{recipe}:end -->"
    return named if recipe and named[0] in text else (START, END)


def update(text: str, report: dict, where: str = "README.md") -> str:
    """`text` with its results section replaced; UserError when the markers are missing or misplaced."""
    start_mark, end_mark = markers(text, (report.get("settings") or {}).get("recipe", ""))
    start, end = text.find(start_mark), text.find(end_mark)
    if start < 0 or end < start:
        raise UserError(f"{where}: no `{start_mark}` ... `{end_mark}` lines to put the results between; add them")
    return text[:start + len(start_mark)] + "\n" + section(report) + "\n" + text[end:]


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
