"""The report: one list of records in, `records.jsonl`, `report.json`, `report.md` and PNG plots out.

A record (see `benchmarks.measure`) is one bundle measured with one set of settings, plus its
`quality` dict and the `machine` it ran on. `build_report` turns the records into
`{"machine", "settings", "models", "ratios", "examples"}`; `write_report` writes every file
atomically into `build/<name>/report/`. The Markdown and the plots are separate printers
(`benchmarks.markdown`, `benchmarks.plots`) of the same report dict.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgestill.files import atomic_write_json, atomic_write_text

MODEL_FIELDS = (
    "name", "role", "precision", "params", "file_bytes", "peak_rss_mb", "load_s",
    "ttft_ms_p50", "ttft_ms_p90", "decode_ms_p50", "decode_ms_p90", "decode_tok_s_p50",
    "quality", "quantization", "bundle", "bundle_sha256",
)
PRECISION_ORDER = {"fp32": 0, "fp16": 1, "int8": 2, "int4": 3}


def model_entry(record: dict) -> dict:
    """The report's view of one record: the model's figures without the settings and machine."""
    return {k: record.get(k) for k in MODEL_FIELDS} | {"quality": dict(record.get("quality") or {})}


def sort_key(model: dict) -> tuple:
    """Teacher first, then students from the widest precision to the narrowest."""
    return (model["role"] != "teacher", PRECISION_ORDER.get(model.get("precision"), 9), model["name"])


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b rounded to 2 places, None when either is missing or b is zero."""
    return round(a / b, 2) if a and b else None


def student_vs_teacher(student: dict, teacher: dict) -> dict:
    """How much smaller and faster a student is than the teacher, measured in the same run."""
    return {
        "teacher": teacher["name"],
        "size_x_smaller": ratio(teacher["file_bytes"], student["file_bytes"]),
        "params_x_fewer": ratio(teacher["params"], student["params"]),
        "decode_x_faster": ratio(student["decode_tok_s_p50"], teacher["decode_tok_s_p50"]),
        "ttft_x_faster": ratio(teacher["ttft_ms_p50"], student["ttft_ms_p50"]),
        "peak_rss_x_smaller": ratio(teacher["peak_rss_mb"], student["peak_rss_mb"]),
    }


def ratios(models: list[dict]) -> dict:
    """`{student name: student_vs_teacher(...)}` against the first teacher; {} without one."""
    teachers = [m for m in models if m["role"] == "teacher"]
    if not teachers:
        return {}
    return {m["name"]: student_vs_teacher(m, teachers[0]) for m in models if m["role"] != "teacher"}


def merge_examples(rows_by_model: dict[str, list[dict]], n: int = 3) -> list[dict]:
    """The first `n` eval examples with every model's answer: {id, input, teacher, label, outputs}."""
    merged: list[dict] = []
    for name, rows in rows_by_model.items():
        for i, row in enumerate(rows[:n]):
            if i == len(merged):
                merged.append({k: row[k] for k in ("id", "input", "teacher", "label")} | {"outputs": {}})
            merged[i]["outputs"][name] = row["output"]
    return merged


def build_report(machine: dict, settings: dict, records: list[dict],
                 examples: list[dict] | None = None) -> dict:
    """The report dict from the run's records (one per bundle)."""
    models = sorted((model_entry(r) for r in records), key=sort_key)
    return {"machine": machine, "settings": settings, "models": models, "ratios": ratios(models),
            "examples": examples or []}


def write_report(out_dir: str | Path, report: dict, records: list[dict]) -> list[Path]:
    """Write records.jsonl, report.json, report.md and the plots into `out_dir`; return the paths."""
    from benchmarks.markdown import render
    from benchmarks.plots import write_plots

    out = Path(out_dir)
    atomic_write_text(out / "records.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", render(report))
    return [out / "records.jsonl", out / "report.json", out / "report.md", *write_plots(report, out)]
