"""Compare two benchmark runs: a Markdown table of each row's figures in A and B and their ratio.

    edgestill bench compare old/records.jsonl new/records.jsonl   # every matching row, B/A ratio
    edgestill bench compare old/report.json new/report.json       # headline models, % change

Records are matched by (name, engine, target, threads, prompt_tokens, gen_tokens); a row in only
one run is listed with "–" on the other side. Timings only compare fairly when both machine lines
(printed first) are the same.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgestill.benchmarks.markdown import number
from edgestill.benchmarks.record import is_ok, key, read_records
from edgestill.benchmarks.report import label
from edgestill.errors import UserError
from edgestill.machine import one_line
from edgestill.markdown import cell, table

METRICS = ("decode_tok_s_p50", "decode_ms_p90", "ttft_ms_p50", "load_s", "peak_rss_mb", "file_bytes",
           "rouge_l_vs_teacher")


def load(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found; run `edgestill bench RECIPE` to write a report.json")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None


def value(model: dict | None, metric: str):
    if model is None:
        return None
    return model.get(metric, (model.get("quality") or {}).get(metric))


def change(a, b) -> str:
    """Relative change from a to b as `+12.3%`; "–" when not computable."""
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or a == 0:
        return "–"
    return f"{(b - a) / abs(a) * 100:+.1f}%"


def compare(a: dict, b: dict) -> str:
    """The Markdown comparison of reports `a` and `b`."""
    models_a = {m["name"]: m for m in a["models"]}
    models_b = {m["name"]: m for m in b["models"]}
    names = list(models_a) + [n for n in models_b if n not in models_a]
    rows = []
    for name in names:
        for metric in METRICS:
            va, vb = value(models_a.get(name), metric), value(models_b.get(name), metric)
            if va is None and vb is None:
                continue
            rows.append([name, metric, number(va, 3), number(vb, 3), change(va, vb)])
    lines = [f"**A:** {cell(one_line(a['machine']))}", "", f"**B:** {cell(one_line(b['machine']))}", "",
             *table(["model", "metric", "A", "B", "change"], rows)]
    return "\n".join(lines) + "\n"


def times(a, b) -> str:
    """B / A as `1.25x`; "–" when not computable."""
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or a == 0:
        return "–"
    return f"{b / a:.2f}x"


def row_name(record: dict) -> str:
    return (f"{label(record)}, t{record.get('threads')} p{record.get('prompt_tokens')} g{record.get('gen_tokens')}"
            + ("" if is_ok(record) else " (error)"))


def compare_records(a: list[dict], b: list[dict]) -> str:
    """Markdown: per matching row and metric, A, B and B/A; machine lines of both runs first."""
    rows_a, rows_b = {key(r): r for r in a}, {key(r): r for r in b}
    keys = list(rows_a) + [k for k in rows_b if k not in rows_a]
    rows = []
    for k in keys:
        ra, rb = rows_a.get(k), rows_b.get(k)
        for metric in METRICS:
            va, vb = value(ra, metric), value(rb, metric)
            if va is None and vb is None:
                continue
            rows.append([row_name(ra or rb), metric, number(va, 3), number(vb, 3), times(va, vb)])
    machines = [next((r["machine"] for r in run if r.get("machine")), {}) for run in (a, b)]
    lines = [f"**A:** {cell(one_line(machines[0]))}", "", f"**B:** {cell(one_line(machines[1]))}", "",
             *table(["row", "metric", "A", "B", "B / A"], rows)]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="edgestill bench compare", description=__doc__.split("\n")[0])
    parser.add_argument("a", help="A/records.jsonl (or A/report.json, or a JSON list of records)")
    parser.add_argument("b", help="B/records.jsonl (or B/report.json)")
    args = parser.parse_args(argv)
    argv = [args.a, args.b]
    if all(Path(p).name == "report.json" for p in argv):
        print(compare(load(argv[0]), load(argv[1])), end="")
    else:  # records: .jsonl, or a JSON list such as the Android app writes
        print(compare_records(read_records(argv[0]), read_records(argv[1])), end="")
    return 0
