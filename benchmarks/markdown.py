"""Markdown printer of a report dict (`benchmarks.report.build_report`): machine line, the headline
table (`report["headline"]`, benchmarks/headline.py: the ground-truth score, retention, size and
per-request latency of the teacher, the students, every bundle and the baselines; a report without
it starts with the next table), one table row per model (headline setting), student-vs-teacher
ratios, every measurement of the grid, failed rows with their message, notes (skipped peers), noise
flags, and a few eval examples.

    python -m edgestill.benchmarks.markdown build/default/report/report.json   # re-print report.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edgestill.machine import device_line, one_line
from edgestill.markdown import cell, table

COLUMNS = ("model", "role", "precision", "params", "size MB", "peak RSS MB", "load s", "TTFT ms p50",
           "decode tok/s p50", "decode ms p50 / p90", "ROUGE-L vs teacher (95% CI)", "vs label", "other quality", "noisy")
SHOWN = ("rouge_l_vs_teacher", "rouge_l_vs_label", "rouge_l_vs_teacher_ci95_lo", "rouge_l_vs_teacher_ci95_hi")


def number(value, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def params_text(params: int | None) -> str:
    if not params:
        return "–"
    return f"{params / 1e6:.1f}M" if params >= 1e5 else f"{params / 1e3:.1f}K"


def quality_text(quality: dict) -> str:
    """`rouge_l_vs_teacher 0.61, top1_agreement_vs_fp32 0.95` (numbers to 3 places)."""
    parts = [f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in quality.items()]
    return ", ".join(parts) or "–"


def model_row(m: dict) -> list[str]:
    quality = m.get("quality") or {}
    size_mb = m["file_bytes"] / 1e6 if m.get("file_bytes") is not None else None
    name = m.get("label") or m["name"]
    return [name, m["role"], number(m.get("precision")), params_text(m.get("params")), number(size_mb),
            number(m.get("peak_rss_mb")), number(m.get("load_s"), 2), number(m.get("ttft_ms_p50")),
            number(m.get("decode_tok_s_p50")),
            f"{number(m.get('decode_ms_p50'), 2)} / {number(m.get('decode_ms_p90'), 2)}",
            rouge_vs_teacher(m, quality), number(quality.get("rouge_l_vs_label"), 3),
            quality_text({k: v for k, v in quality.items() if k not in SHOWN}),
            "yes" if m.get("noisy") else ("no" if m.get("noisy") is False else "–")]


def rouge_vs_teacher(m: dict, quality: dict) -> str:
    if m.get("role") == "teacher" and "rouge_l_vs_teacher" not in quality:
        return "reference"  # the teacher's own answers: not re-scored (benchmarks.__main__.score_all)
    text = number(quality.get("rouge_l_vs_teacher"), 3)
    lo, hi = quality.get("rouge_l_vs_teacher_ci95_lo"), quality.get("rouge_l_vs_teacher_ci95_hi")
    return text if lo is None or hi is None else f"{text} ({lo:.3f}-{hi:.3f})"


def score_text(score: dict | None) -> str:
    """`0.812 (0.750-0.875)`, `0.812` without an interval, `–` without a value."""
    if not score or score.get("value") is None:
        return "–"
    ci = score.get("ci95")
    return f"{score['value']:.3f}" + (f" ({ci[0]:.3f}-{ci[1]:.3f})" if ci else "")


def headline_score(row: dict, key: str, score: dict | None) -> str:
    """A row's figure; `reference` for the teacher's ROUGE-L against its own answers."""
    if score is None and key == "rouge_l_vs_teacher" and row.get("role") == "teacher":
        return "reference"
    return score_text(score)


def retention_text(r: dict | None) -> str:
    """`0.950 (0.900-0.990)` (paired interval), `0.950 (no interval)` (a per-example list was missing)."""
    if not r:
        return "–"
    return f"{r['value']:.3f}" + (f" ({r['ci95'][0]:.3f}-{r['ci95'][1]:.3f})" if r.get("ci95") else " (no interval)")


def with_retention(headline: dict) -> bool:
    """Whether the headline has a retention column (not for ROUGE-L vs the teacher: the teacher is its reference)."""
    return headline["metric"] != "rouge_l_vs_teacher"


def latency_header(headline: dict) -> str:
    return (f"request ms (TTFT at {number(headline.get('prompt_tokens'))}-token prompt + "
            f"{number(headline.get('answer_tokens'))} answer tokens at p50 decode)")


def split_secondary(headline: dict) -> tuple[list, list]:
    """(ground-truth columns shown before retention, ROUGE-L vs the teacher shown after it)."""
    columns = [tuple(c) for c in headline["secondary"]]
    return [c for c in columns if c[0] != "rouge_l_vs_teacher"], [c for c in columns if c[0] == "rouge_l_vs_teacher"]


def headline_columns(headline: dict) -> list[str]:
    ground, later = split_secondary(headline)
    return ["model", "what", f"{headline['name']} (95% CI)", *[name for _, name in ground],
            *(["retention vs teacher (paired 95% CI)"] if with_retention(headline) else []),
            *[name for _, name in later], "params", "bundle MB", latency_header(headline)]


def headline_cells(headline: dict, row: dict) -> list[str]:
    """The figures of one headline row, in `headline_columns` order after model and what."""
    size = row["file_bytes"] / 1e6 if row.get("file_bytes") is not None else None
    ground, later = split_secondary(headline)
    secondary = row.get("secondary") or {}
    return [headline_score(row, headline["metric"], row.get("score")),
            *[headline_score(row, k, secondary.get(k)) for k, _ in ground],
            *([retention_text(row.get("retention"))] if with_retention(headline) else []),
            *[headline_score(row, k, secondary.get(k)) for k, _ in later],
            params_text(row.get("params")), number(size), number(row.get("request_ms"))]


def headline_lines(headline: dict, chart: str | None = "headline_latency.png") -> list[str]:
    """The headline table, how retention is read, and the chart's link."""
    lines = [f"**Headline: {headline['name']}** on {headline.get('examples')} held-out examples", "",
             *table(headline_columns(headline), [[r["name"], r["what"], *headline_cells(headline, r)]
                                                 for r in headline["rows"]]), ""]
    if with_retention(headline):
        lines += [f"Retention = {headline['name']} ÷ that of {headline['reference']}; the interval is a paired "
                  "bootstrap over the eval examples (the same resampled examples for both), \"no interval\" where a "
                  "per-example list is missing.", ""]
    lines += ["Request ms is estimated from the measured TTFT and decode rate of each bundle in our runtime (rows "
              "without a bundle have none).", ""]
    if chart:
        lines += [f"![{headline['name']} against request latency]({chart})", ""]
    return lines


def times(r: float | None, better: str, worse: str) -> str:
    """`2.50x smaller`, or `1.25x larger` when the ratio is below 1."""
    if r is None:
        return f"– {better}"
    return f"{r:.2f}x {better}" if r >= 1 else f"{1 / r:.2f}x {worse}"


def ratio_lines(ratios: dict) -> list[str]:
    out = []
    for name, r in ratios.items():
        parts = [times(r["size_x_smaller"], "smaller files", "larger files"),
                 times(r["params_x_fewer"], "fewer params", "more params"),
                 times(r["decode_x_faster"], "faster decode", "slower decode"),
                 times(r["ttft_x_faster"], "faster first token", "slower first token"),
                 times(r["peak_rss_x_smaller"], "smaller peak RSS", "larger peak RSS")]
        out.append(f"- **{name}** vs {r['teacher']}: " + ", ".join(parts))
    return out


def example_lines(examples: list[dict]) -> list[str]:
    out = []
    for i, ex in enumerate(examples, 1):
        rows = [["teacher (reference, from data/teacher.jsonl)", ex["teacher"]]]
        if ex.get("label") is not None:
            rows.append(["label", ex["label"]])
        rows += [[name, text or "(empty)"] for name, text in ex["outputs"].items()]
        out += [f"### Example {i} (id {ex['id']})", "", "> " + cell(ex["input"]), "",
                *table(["model", "answer"], rows), ""]
    return out


ROW_COLUMNS = ("model", "target", "threads", "prompt", "gen", "load s", "TTFT ms p50", "decode tok/s p50 (min-max)",
               "decode ms p90", "peak RSS MB", "other CPU %", "status")


def grid_row(r: dict) -> list[str]:
    status = "ok" if r["status"] == "ok" else "error"
    if r.get("noisy"):
        status += " (noisy: " + "; ".join(r.get("noise") or []) + ")"
    spread = f"{number(r.get('decode_tok_s_p50'))} ({number(r.get('decode_tok_s_min'))}-{number(r.get('decode_tok_s_max'))})"
    return [r["label"], r.get("target") or "local", number(r.get("threads")), number(r.get("prompt_tokens")),
            number(r.get("gen_tokens")), number(r.get("load_s"), 2), number(r.get("ttft_ms_p50")), spread,
            number(r.get("decode_ms_p90"), 2), number(r.get("peak_rss_mb")), number(r.get("others_cpu_pct")), status]


def tail_sections(report: dict) -> list[str]:
    """Every measurement (when there are more rows than models), errors, notes."""
    lines = []
    rows = report.get("rows") or []
    if len(rows) > len(report["models"]) + len(report.get("peers") or []):
        lines += ["## Every measurement", "", *table(ROW_COLUMNS, [grid_row(r) for r in rows]), ""]
    if report.get("errors"):
        lines += ["## Failed measurements", ""]
        lines += [f"- **{e['label']}** ({e['target']}, threads {e['threads']}, {e['prompt_tokens']}+{e['gen_tokens']} "
                  f"tokens): {cell(e['error'])}" for e in report["errors"]] + [""]
    if report.get("notes"):
        lines += ["## Notes", "", *[f"- {cell(n)}" for n in report["notes"]], ""]
    return lines


def settings_line(s: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in s.items())


def machine_lines(report: dict) -> list[str]:
    """The header's machines: one line when everything ran here; else each measured device (from its
    records) and, separately, the machine that ran the harness."""
    measured = report.get("devices") or {}
    if set(measured) <= {"local"}:
        return [f"**Machine:** {one_line(report['machine'])}", ""]
    return ["**Measured on:**", "", *[f"- `{target}`: {device_line(m)}" for target, m in measured.items()], "",
            f"**Harness** (ran the benchmark and scored quality): {one_line(report['machine'])}", ""]


def render(report: dict) -> str:
    """The whole report.md text."""
    lines = [f"# Benchmark: {report['settings'].get('recipe', '')}", "", *machine_lines(report),
             f"**Settings:** {settings_line(report['settings'])}", ""]
    if report.get("headline"):
        lines += [*headline_lines(report["headline"]), "## Speed, memory and every quality figure", ""]
    lines += [*table(COLUMNS, [model_row(m) for m in report["models"]]), ""]
    if report.get("peers"):
        lines += ["## Peers (same machine, same run, same settings)", "",
                  *table(COLUMNS, [model_row(m) for m in report["peers"]]), ""]
    if report.get("ratios"):
        lines += ["## Student vs teacher (same run, same machine)", "", *ratio_lines(report["ratios"]), ""]
    lines += tail_sections(report)
    if report.get("examples"):
        lines += ["## Examples (greedy, eval split)", "", *example_lines(report["examples"])]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(render(json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))), end="")
