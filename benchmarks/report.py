"""The report: one list of records in, `records.jsonl`, `records.csv`, `report.json`, `report.md`, PNGs out.

A record (benchmarks/record.schema.json) is one model measured by one engine on one target with
one setting, plus its `quality` dict and the `machine` it ran on. `build_report` turns the records
into `{"machine" (the harness's), "devices" (each target's), "settings", "models", "peers", "ratios", "rows", "errors", "notes", "examples"}`
(benchmarks/__main__.py adds `gains_over_fp32_student`: each bundle's paired ROUGE-L gain over
the fp32 student bundle, benchmarks.quality.gains_over; and `headline`: the ground-truth score and
retention of every model, benchmarks.headline.build_headline):
`models` are the ok records of our runtime (and the phone app) at the headline setting (the first
value of each grid list), one per (model, target), labelled `name` or `name @ target`; `peers` the
same for the other engines, labelled `name (engine)`; `rows` are every
record (the whole grid); `errors` the failed ones with their message. `write_report` writes every
file atomically. The Markdown, CSV and plots are separate printers of the same data.
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
ROW_FIELDS = ("label", "name", "engine", "target", "threads", "prompt_tokens", "gen_tokens", "status", "error",
              "load_s", "ttft_ms_p50", "decode_tok_s_p50", "decode_tok_s_min", "decode_tok_s_max", "decode_ms_p90",
              "peak_rss_mb", "others_cpu_pct", "noisy", "noise")
OUR_ENGINE = "edgestill-runtime"
SHIPPED_ENGINES = (OUR_ENGINE, "android-demo")  # what a user ships; the other engines are peers
PRECISION_ORDER = {"fp32": 0, "fp16": 1, "int8": 2, "int4": 3, "gguf-f32": 0, "gguf-f16": 1, "gguf-q8_0": 2, "gguf-q4_0": 3}


def label(record: dict) -> str:
    """`default-int8`, `default-int8 (onnxruntime-genai)`, `default-int8 @ ssh://pi@board`."""
    text = record["name"]
    if record.get("engine", OUR_ENGINE) != OUR_ENGINE:
        text += f" ({record['engine']})"
    if record.get("target", "local") != "local":
        text += f" @ {record['target']}"
    return text


def model_entry(record: dict) -> dict:
    """The report's view of one record: the model's figures without the settings and machine."""
    return {k: record.get(k) for k in MODEL_FIELDS} | {
        "quality": dict(record.get("quality") or {}), "label": label(record),
        "engine": record.get("engine", OUR_ENGINE), "target": record.get("target", "local"),
        "noisy": record.get("noisy")}


def row_entry(record: dict) -> dict:
    return {k: record.get(k) for k in ROW_FIELDS} | {"label": label(record), "status": record.get("status", "ok")}


def headline(records: list[dict]) -> list[dict]:
    """The ok records at the first (threads, prompt_tokens, gen_tokens) each (model, engine, target) has."""
    seen, out = set(), []
    for r in records:
        who = label(r)
        if r.get("status", "ok") == "ok" and who not in seen:
            seen.add(who)
            out.append(r)
    return out


def sort_key(model: dict) -> tuple:
    """Teacher first, then students from the widest precision to the narrowest; our runtime before peers."""
    return (model.get("target", "local") != "local", model["role"] != "teacher",
            PRECISION_ORDER.get(model.get("precision"), 9), model.get("engine", OUR_ENGINE) != OUR_ENGINE,
            model.get("label") or model["name"])


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b rounded to 2 places, None when either is missing or b is zero."""
    return round(a / b, 2) if a and b else None


def student_vs_teacher(student: dict, teacher: dict) -> dict:
    """How much smaller and faster a student is than the teacher, measured in the same run."""
    return {
        "teacher": teacher.get("label") or teacher["name"],
        "size_x_smaller": ratio(teacher["file_bytes"], student["file_bytes"]),
        "params_x_fewer": ratio(teacher["params"], student["params"]),
        "decode_x_faster": ratio(student["decode_tok_s_p50"], teacher["decode_tok_s_p50"]),
        "ttft_x_faster": ratio(teacher["ttft_ms_p50"], student["ttft_ms_p50"]),
        "peak_rss_x_smaller": ratio(teacher["peak_rss_mb"], student["peak_rss_mb"]),
    }


def ratios(models: list[dict]) -> dict:
    """`{label: student_vs_teacher(...)}` of every other model against the teacher in our runtime on
    the same target (the first teacher when none is); {} without a teacher."""
    out = {}
    for m in models:
        same = [t for t in models if t["role"] == "teacher" and t.get("target") == m.get("target")]
        ours = [t for t in same if t.get("engine", OUR_ENGINE) == OUR_ENGINE] or same
        if ours and ours[0] is not m:
            out[m.get("label") or m["name"]] = student_vs_teacher(m, ours[0])
    return out


# our runtime's bundle precision that each GGUF type is compared with (same weight width)
LIKE_FOR_LIKE = {"gguf-q8_0": ("int8", "int8-b32", "int8-b16"), "gguf-q4_0": ("int4", "int4-b64", "int4-gptq"),
                 "gguf-f16": ("fp16", "fp32"), "gguf-f32": ("fp32",)}


SCORES = (("accuracy_vs_label", "accuracy"), ("field_f1_vs_label", "field F1"),
          ("rouge_l_vs_label", "ROUGE-L vs the references"), ("rouge_l_vs_teacher", "ROUGE-L vs the teacher"))


def task_score(gguf: dict, ours: dict) -> str:
    """`; accuracy: llama.cpp 0.720, ours 0.720` with the first task score both have, else ''."""
    a, b = gguf.get("quality") or {}, ours.get("quality") or {}
    key = next(((k, name) for k, name in SCORES if k in a and k in b), None)
    return f"; {key[1]}: llama.cpp {a[key[0]]:.3f}, ours {b[key[0]]:.3f}" if key else ""


def llama_cpp_vs_ours(models: list[dict]) -> list[str]:
    """One line per llama.cpp student GGUF against our runtime's bundle of the same weight width, both
    measured in this run on the same target: which decodes faster and by how much, and first tokens."""
    lines = []
    for g in [m for m in models if m.get("engine") == "llama.cpp" and m["role"] == "student"]:
        ours = [m for want in LIKE_FOR_LIKE.get(g.get("precision"), ()) for m in models
                if m.get("engine", OUR_ENGINE) == OUR_ENGINE and m["role"] == "student"
                and m.get("precision") == want and m.get("target") == g.get("target")]
        if not ours or not g.get("decode_tok_s_p50") or not ours[0].get("decode_tok_s_p50"):
            continue
        o = ours[0]
        speed = g["decode_tok_s_p50"] / o["decode_tok_s_p50"]
        faster = "llama.cpp" if speed > 1 else "our runtime"
        ttft = (f"; first token: llama.cpp {g['ttft_ms_p50']:.1f} ms, ours {o['ttft_ms_p50']:.1f} ms"
                if g.get("ttft_ms_p50") and o.get("ttft_ms_p50") else "")
        lines.append(f"llama.cpp {g['precision']} vs our runtime {o['precision']} ({o['label']}): {faster} decodes "
                     f"{max(speed, 1 / speed):.2f}x faster ({g['decode_tok_s_p50']:.1f} vs {o['decode_tok_s_p50']:.1f} "
                     f"tok/s){ttft}{task_score(g, o)}")
    return lines


def merge_examples(rows_by_model: dict[str, list[dict]], n: int = 3) -> list[dict]:
    """The first `n` eval examples with every model's answer: {id, input, teacher, label, outputs}."""
    merged: list[dict] = []
    for name, rows in rows_by_model.items():
        for i, row in enumerate(rows[:n]):
            if i == len(merged):
                merged.append({k: row[k] for k in ("id", "input", "teacher", "label")} | {"outputs": {}})
            merged[i]["outputs"][name] = row["output"]
    return merged


def devices(records: list[dict]) -> dict[str, dict]:
    """The device each target's measurements ran on, by target, from its first measured record's
    `machine` (a board's or phone's own facts, not the harness's); targets with no measured row are left out."""
    out: dict[str, dict] = {}
    for r in records:
        if r.get("status", "ok") == "ok" and r.get("machine"):
            out.setdefault(r.get("target", "local"), r["machine"])
    return out


def build_report(machine: dict, settings: dict, records: list[dict],
                 examples: list[dict] | None = None, notes: list[str] | None = None) -> dict:
    """The report dict from the run's records (one per model x engine x target x setting)."""
    entries = sorted((model_entry(r) for r in headline(records)), key=sort_key)
    models = [m for m in entries if m["engine"] in SHIPPED_ENGINES]
    peers = [m for m in entries if m["engine"] not in SHIPPED_ENGINES]
    errors = [{"label": label(r), "target": r.get("target", "local"), "threads": r.get("threads"),
               "prompt_tokens": r.get("prompt_tokens"), "gen_tokens": r.get("gen_tokens"), "error": r.get("error")}
              for r in records if r.get("status", "ok") != "ok"]
    return {"machine": machine, "devices": devices(records), "settings": settings, "models": models, "peers": peers,
            "ratios": ratios(models + peers), "rows": [row_entry(r) for r in records], "errors": errors,
            "notes": [*(notes or []), *llama_cpp_vs_ours(models + peers)],
            "examples": examples or []}


def write_report(out_dir: str | Path, report: dict, records: list[dict]) -> list[Path]:
    """Write records.jsonl, report.json, report.md and the plots into `out_dir`; return the paths."""
    from edgestill.benchmarks.csv_printer import render_csv
    from edgestill.benchmarks.markdown import render
    from edgestill.benchmarks.plots import write_plots

    out = Path(out_dir)
    atomic_write_text(out / "records.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    atomic_write_text(out / "records.csv", render_csv(records))
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", render(report))
    return [out / "records.jsonl", out / "records.csv", out / "report.json", out / "report.md",
            *write_plots(report, out)]
