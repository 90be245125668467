"""PNG plots of a report dict: decode speed and file size per model, and quality vs speed.

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


def save_png(fig: Figure, path: Path) -> Path:
    """Render `fig` to PNG bytes and write them atomically to `path`."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path


def bar(ax, models: list[dict], values: list[float], title: str, unit: str) -> None:
    names = [m["name"] for m in models]
    bars = ax.bar(names, values, color=[COLORS.get(m["role"], "#1f77b4") for m in models])
    ax.bar_label(bars, labels=[f"{v:.1f}" for v in values], fontsize=8)
    ax.set_title(title)
    ax.set_ylabel(unit)
    ax.tick_params(axis="x", labelrotation=20, labelsize=8)


def speed_and_size(models: list[dict], path: Path) -> Path:
    """Two bar charts side by side: decode tok/s (p50) and bundle size (MB) per model."""
    fig = Figure(figsize=(10, 4))
    left, right = fig.subplots(1, 2)
    bar(left, models, [m.get("decode_tok_s_p50") or 0.0 for m in models], "Decode speed (p50)", "tokens/s")
    bar(right, models, [m["file_bytes"] / 1e6 for m in models], "Bundle size", "MB")
    return save_png(fig, path)


def quality_vs_speed(models: list[dict], path: Path, metric: str = "rouge_l_vs_teacher") -> Path:
    """Scatter of each model's `metric` against its decode tok/s, points labelled by name."""
    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    for m in models:
        x, y = m.get("decode_tok_s_p50") or 0.0, (m.get("quality") or {}).get(metric)
        if y is None:
            continue
        ax.scatter([x], [y], s=50, color=COLORS.get(m["role"], "#1f77b4"))
        ax.annotate(m["name"], (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel("decode tokens/s (p50)")
    ax.set_ylabel(metric)
    ax.set_ylim(0, 1.05)
    ax.set_title("Quality vs speed (up and right is better)")
    ax.grid(alpha=0.3)
    return save_png(fig, path)


def write_plots(report: dict, out_dir: str | Path) -> list[Path]:
    """Write `speed_size.png` and `quality_speed.png` into `out_dir`; return their paths."""
    out = Path(out_dir)
    models = report["models"]
    return [speed_and_size(models, out / "speed_size.png"), quality_vs_speed(models, out / "quality_speed.png")]
