"""The size/quality trade-off of a sweep (distill/sweep.py) from its points' benchmark reports.

    python -m edgestill.benchmarks.sweep_chart --out build/summaries-sweep \
        l4=build/summaries-l4/report/report.json l8=build/summaries-l8/report/report.json

For each point it takes the headline row (benchmarks/headline.py) of the student's int8 bundle (else
its first bundle with a latency): the ground-truth score with its 95% interval, retention against the
teacher with its paired interval, params, bundle MB and per-request latency; and the teacher's bundle
row of the first report. Writes, atomically, `sweep.json`, `sweep.md` (a table) and `sweep.png`: the
score against per-request latency and against bundle MB, the Pareto front of each (no other point is
both faster / smaller and better), and the smallest student whose retention is at least 0.95 ringed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from matplotlib.figure import Figure

from edgestill.benchmarks.plots import save_png
from edgestill.errors import UserError, cli_main
from edgestill.files import atomic_write_json, atomic_write_text
from edgestill.markdown import table

KEEP = 0.95  # retention that counts as keeping the teacher's skill
PREFERRED = ("int8", "int8-b32", "int8-b16", "int4-gptq-mixed", "fp32")


def bundle_row(headline: dict, role: str) -> dict | None:
    """The `role`'s bundle row with a latency: the int8 bundle first for students."""
    rows = [r for r in headline.get("rows", []) if r.get("role") == role and r.get("request_ms")]
    rows.sort(key=lambda r: PREFERRED.index(r.get("precision")) if r.get("precision") in PREFERRED else 99)
    return rows[0] if rows else None


def point_of(name: str, report_path: Path) -> tuple[dict, dict | None]:
    """(the student's point, the teacher's bundle row) from one report.json."""
    if not report_path.is_file():
        raise UserError(f"{name}: {report_path} not found; run the sweep (or `edgestill bench`) for it first")
    report = json.loads(report_path.read_text(encoding="utf-8"))
    headline = report.get("headline") or {}
    row = bundle_row(headline, "student")
    if row is None:
        raise UserError(f"{report_path}: no student bundle with a score and a latency in its headline; "
                        "benchmark the point's bundles again")
    point = {"name": name, "bundle": row["name"], "precision": row.get("precision"), "params": row.get("params"),
             "bundle_mb": round(row["file_bytes"] / 1e6, 1) if row.get("file_bytes") else None,
             "request_ms": row["request_ms"], "score": (row.get("score") or {}).get("value"),
             "score_ci95": (row.get("score") or {}).get("ci95"),
             "retention": (row.get("retention") or {}).get("value"),
             "retention_ci95": (row.get("retention") or {}).get("ci95"), "metric": headline.get("name"),
             "novel_word_share": novel_share(row)}
    return point, bundle_row(headline, "teacher")


def novel_share(row: dict | None) -> float | None:
    """A free-text row's share of words in neither input nor reference (headline secondary), else None."""
    return (((row or {}).get("secondary") or {}).get("novel_word_share") or {}).get("value")


def front(points: list[dict], x: str) -> list[str]:
    """Names on the Pareto front of (lower `x`, higher score)."""
    names = []
    for p in points:
        beaten = any(q is not p and q[x] <= p[x] and q["score"] >= p["score"] and (q[x] < p[x] or q["score"] > p["score"])
                     for q in points)
        if not beaten:
            names.append(p["name"])
    return names


def smallest_keeping(points: list[dict]) -> str | None:
    """The smallest bundle (then fastest) whose retention is at least 0.95; None when none is."""
    keeping = [p for p in points if p.get("retention") is not None and p["retention"] >= KEEP]
    return min(keeping, key=lambda p: (p["bundle_mb"] or 0, p["request_ms"]))["name"] if keeping else None


def summary(points: list[dict], teacher: dict | None) -> dict:
    points = [p for p in points if p["score"] is not None]
    return {"metric": points[0]["metric"] if points else None, "keep": KEEP, "points": points,
            "teacher": None if teacher is None else {
                "name": teacher["name"], "score": (teacher.get("score") or {}).get("value"),
                "request_ms": teacher["request_ms"], "params": teacher.get("params"),
                "novel_word_share": novel_share(teacher),
                "bundle_mb": round(teacher["file_bytes"] / 1e6, 1) if teacher.get("file_bytes") else None},
            "front_latency": front(points, "request_ms"), "front_size": front(points, "bundle_mb"),
            "smallest_keeping": smallest_keeping(points)}


def params_text(params: int | None) -> str:
    if not params:
        return "–"
    return f"{params / 1e6:.1f}M" if params >= 1e5 else f"{params / 1e3:.1f}K"


def markdown(s: dict) -> str:
    novel = any(p.get("novel_word_share") is not None for p in s["points"])
    rows = [[p["name"], p["bundle"], params_text(p.get("params")),
             f"{p['bundle_mb']}", f"{p['request_ms']:.1f}",
             f"{p['score']:.3f}" + (f" ({p['score_ci95'][0]:.3f}-{p['score_ci95'][1]:.3f})" if p.get("score_ci95") else ""),
             "–" if p.get("retention") is None else f"{p['retention']:.3f}",
             *([_share(p.get("novel_word_share"))] if novel else []),
             ("front" if p["name"] in s["front_latency"] else "") + (" ★" if p["name"] == s["smallest_keeping"] else "")]
            for p in s["points"]]
    t = s.get("teacher")
    lines = [f"# Sweep: {s['metric']} against per-request latency and bundle size", "",
             *table(["size", "bundle", "params", "bundle MB", "request ms", f"{s['metric']} (95% CI)", "retention",
                     *(["new words"] if novel else []), "Pareto (latency)"], rows), ""]
    if t:
        score = "the reference of the scores" if t["score"] is None else f"{t['score']:.3f}"
        words = f", new words {_share(t['novel_word_share'])}" if t.get("novel_word_share") is not None else ""
        lines += [f"Teacher ({t['name']}): {score}, {t['request_ms']:.1f} ms per request, {t['bundle_mb']} MB{words}.", ""]
    if novel:
        lines += ["New words: the mean share of an answer's words found in neither its input nor its reference "
                  "(invented content, broken words; lower is better).", ""]
    keep = s["smallest_keeping"]
    if all(p.get("retention") is None for p in s["points"]):
        return "\n".join([*lines, "No retention: the scores are against the teacher itself (no ground truth)."]) + "\n"
    lines.append(f"★ the smallest student keeping at least {KEEP:.2f} of the teacher's score: {keep}." if keep else
                 f"No student keeps {KEEP:.2f} of the teacher's score.")
    return "\n".join(lines) + "\n"


def _share(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def chart(s: dict, path: Path) -> Path:
    fig = Figure(figsize=(11, 4.4))
    for ax, x, xlabel, key in ((fig.add_subplot(1, 2, 1), "request_ms", "per-request latency (ms)", "front_latency"),
                               (fig.add_subplot(1, 2, 2), "bundle_mb", "bundle (MB)", "front_size")):
        pts = s["points"]
        ax.scatter([p[x] for p in pts], [p["score"] for p in pts], color="#1f77b4", zorder=3)
        on = sorted((p for p in pts if p["name"] in s[key]), key=lambda p: p[x])
        ax.plot([p[x] for p in on], [p["score"] for p in on], color="#1f77b4", alpha=0.5, label="Pareto front")
        for p in pts:
            ax.annotate(p["name"], (p[x], p["score"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
            if p["name"] == s["smallest_keeping"]:
                ax.scatter([p[x]], [p["score"]], s=220, facecolors="none", edgecolors="#d62728", zorder=4,
                           label=f"smallest with retention ≥ {KEEP:.2f}")
        t = s.get("teacher")
        if t and t.get("score") is not None:
            ax.axhline(t["score"], color="#7f7f7f", linestyle="--", label=f"teacher ({t[x]} {xlabel.split(' ')[-1]})")
            ax.axhline(KEEP * t["score"], color="#7f7f7f", linestyle=":", label=f"{KEEP:.2f} x teacher")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(s["metric"] or "score")
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Student sizes: {s['metric']} against cost")
    return save_png(fig, path)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgestill.benchmarks.sweep_chart", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="the sweep folder to write")
    parser.add_argument("points", nargs="+", metavar="NAME=REPORT", help="each point's report.json")
    args = parser.parse_args(argv)
    points, teacher = [], None
    for item in args.points:
        name, _, path = item.partition("=")
        if not path:
            raise UserError(f"{item}: give NAME=path/to/report.json")
        point, t = point_of(name, Path(path))
        points.append(point)
        teacher = teacher or t
    s = summary(points, teacher)
    out = Path(args.out)
    atomic_write_json(out / "sweep.json", s)
    atomic_write_text(out / "sweep.md", markdown(s))
    chart(s, out / "sweep.png")
    print(out / "sweep.md")
    return 0


if __name__ == "__main__":
    cli_main(main)
