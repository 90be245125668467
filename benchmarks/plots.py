"""PNG plots of a report dict (the headline models): `speed_memory.png` (decode tok/s and peak RSS per
model, engine and precision), `size_quality.png` (bundle size vs ROUGE-L vs teacher) and
`quality_speed.png` (ROUGE-L vs decode tok/s).

Uses matplotlib's object API with the Agg canvas (no pyplot, no display, no global state);
each PNG is rendered in memory and written atomically.
"""

from __future__ import annotations

import io
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from edgestill.files import atomic_write_bytes

COLORS = {"teacher": "#7f7f7f", "student": "#1f77b4"}
PRECISION_COLORS = {"fp32": "#1f77b4", "fp16": "#17becf", "bf16": "#17becf", "int8": "#ff7f0e", "int4": "#d62728"}


def save_png(fig: Figure, path: Path) -> Path:
    """Render `fig` to PNG bytes and write them atomically to `path`."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path


def color(model: dict) -> str:
    """Grey for the teacher, else a colour per precision."""
    if model["role"] == "teacher":
        return COLORS["teacher"]
    return PRECISION_COLORS.get(model.get("precision"), COLORS["student"])


def bar(ax, models: list[dict], values: list[float], title: str, unit: str) -> None:
    names = [m.get("label") or m["name"] for m in models]
    bars = ax.bar(names, values, color=[color(m) for m in models])
    ax.bar_label(bars, labels=[f"{v:.1f}" for v in values], fontsize=8)
    ax.set_title(title)
    ax.set_ylabel(unit)
    ax.tick_params(axis="x", labelrotation=20, labelsize=8)


def speed_and_memory(models: list[dict], path: Path) -> Path:
    """Two bar charts: decode tok/s (p50) and peak RSS (MiB) per model/engine, coloured by precision."""
    fig = Figure(figsize=(max(10, 1.3 * len(models)), 4.5))
    left, right = fig.subplots(1, 2)
    bar(left, models, [m.get("decode_tok_s_p50") or 0.0 for m in models], "Decode speed (p50)", "tokens/s")
    bar(right, models, [m.get("peak_rss_mb") or 0.0 for m in models], "Peak RSS (fresh process)", "MiB")
    return save_png(fig, path)


def size_vs_quality(models: list[dict], path: Path, metric: str = "rouge_l_vs_teacher") -> Path:
    """Scatter of bundle size (MB, log scale) against `metric`, one point per model in our runtime."""
    ours = [m for m in models if m.get("file_bytes") and m.get("engine", "edgestill-runtime") == "edgestill-runtime"]
    return _quality_scatter(ours, path, metric, lambda m: m["file_bytes"] / 1e6, "bundle size, MB (log)",
                            "Size vs quality (up and left is better)", log_x=True)


def quality_vs_speed(models: list[dict], path: Path, metric: str = "rouge_l_vs_teacher") -> Path:
    """Scatter of each model's `metric` against its decode tok/s, points labelled by name."""
    return _quality_scatter(models, path, metric, lambda m: m.get("decode_tok_s_p50") or 0.0,
                            "decode tokens/s (p50)", "Quality vs speed (up and right is better)")


def _quality_scatter(models: list[dict], path: Path, metric: str, x_of, xlabel: str, title: str,
                     log_x: bool = False) -> Path:
    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    for m in models:
        y = (m.get("quality") or {}).get(metric)
        if y is None:
            continue
        x = x_of(m)
        ax.scatter([x], [y], s=50, color=color(m))
        ax.annotate(m.get("label") or m["name"], (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(metric)
    ax.set_ylim(0, 1.05)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return save_png(fig, path)


def write_plots(report: dict, out_dir: str | Path) -> list[Path]:
    """Write the PNGs into `out_dir`; return their paths (none when no model was measured)."""
    out = Path(out_dir)
    models = report["models"] + report.get("peers", [])
    if not models:
        return []
    return [speed_and_memory(models, out / "speed_memory.png"), size_vs_quality(models, out / "size_quality.png"),
            quality_vs_speed(models, out / "quality_speed.png")]
