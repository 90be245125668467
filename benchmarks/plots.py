"""PNG plots of a report dict (the headline models): `speed_memory.png` (decode tok/s and peak RSS per
model, engine and precision), `size_quality.png` (bundle size vs ROUGE-L vs teacher),
`quality_speed.png` (ROUGE-L vs decode tok/s) and, for a report with a `headline`
(benchmarks/headline.py), `headline_latency.png`: the headline score with its 95% interval
against the estimated per-request latency, one point per row with a latency (the bundles), the
teacher zero-shot and the trivial baseline as horizontal lines (they have no latency of their own),
labels placed where they overlap no other label or point.

Uses matplotlib's object API with the Agg canvas (no pyplot, no display, no global state);
each PNG is rendered in memory and written atomically.
"""

from __future__ import annotations

import io
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.ticker import FuncFormatter
from matplotlib.transforms import Bbox

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


OFFSETS = ((8, 6), (8, -10), (-8, 6), (-8, -10), (8, 18), (-8, 18), (8, -22), (-8, -22), (0, 30), (0, -34),
           (24, 30), (-24, 30), (24, -34), (-24, -34))  # points, tried in order


def place_labels(ax, points: list[tuple[float, float, str]], avoid: list[Bbox] = ()) -> list:
    """Annotate each (x, y, text) at the first offset whose text box overlaps no other label, point
    or box of `avoid` (display units) and stays inside the axes (else the least crowded one);
    return the annotations."""
    renderer = ax.figure.canvas.get_renderer()
    to_display = ax.transData.transform
    taken = [box_around(to_display((x, y)), 6) for x, y, _ in points] + list(avoid)
    inside, placed = ax.get_window_extent(renderer), []
    for x, y, text in sorted(points, key=lambda p: (-p[1], p[0])):
        best = None
        for dx, dy in OFFSETS:
            ann = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=8, va="center",
                              ha="left" if dx > 0 else "right" if dx < 0 else "center",
                              arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.5, "shrinkA": 0, "shrinkB": 4})
            box = text_box(ann, renderer)
            crowding = sum(box.overlaps(t) for t in taken) + (0 if inside.contains(box.x0, box.y0)
                                                              and inside.contains(box.x1, box.y1) else 0.5)
            if best is None or crowding < best[0]:
                if best is not None:
                    best[1].remove()
                best = (crowding, ann, box)
            else:
                ann.remove()
            if crowding == 0:
                break
        taken.append(best[2])
        placed.append(best[1])
    return placed


def text_box(ann, renderer) -> Bbox:
    """The display box of an annotation's text alone (not its leader line), at its final position."""
    ann.update_positions(renderer)
    return Text.get_window_extent(ann, renderer)


def box_around(xy, radius: float) -> Bbox:
    return Bbox.from_bounds(xy[0] - radius, xy[1] - radius, 2 * radius, 2 * radius)


def whisker_box(ax, row: dict) -> Bbox:
    """The display box of a point's interval whisker (3 px either side), for labels to avoid."""
    lo, hi = row["score"].get("ci95") or [row["score"]["value"]] * 2
    to_display = ax.transData.transform
    return Bbox([to_display((row["request_ms"], lo)) - 3, to_display((row["request_ms"], hi)) + 3])


def headline_vs_latency(headline: dict, path: Path) -> Path:
    """The headline score (95% interval whiskers) against estimated request ms (log), labelled."""
    fig = Figure(figsize=(7, 4.8))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    rows = [r for r in headline["rows"] if r.get("score") and r["score"].get("value") is not None]
    points = [r for r in rows if r.get("request_ms")]
    for r in points:
        y, ci = r["score"]["value"], r["score"].get("ci95") or [r["score"]["value"]] * 2
        ax.errorbar([r["request_ms"]], [y], yerr=[[y - ci[0]], [ci[1] - y]], fmt="o", ms=7, capsize=3,
                    color=color(r))
    styles = iter(("--", "-.", (0, (5, 1, 1, 1, 1, 1))))
    for r in rows:
        trivial = r["role"] == "baseline" and not r.get("params")  # no model: majority label, echo
        if not r.get("request_ms") and (r["role"] == "teacher" or trivial):
            teacher = r["role"] == "teacher"
            ax.axhline(r["score"]["value"], ls=next(styles, "--") if teacher else ":", lw=1,
                       color=COLORS["teacher"] if teacher else "#2ca02c",
                       label=f"{r['name']} {r['score']['value']:.3f}")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.05)
    xs = [r["request_ms"] for r in points] or [10.0, 100.0]
    ax.set_xlim(min(xs) / 1.6, max(xs) * 1.6)
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    if max(xs) / min(xs) < 12:  # within about a decade: label the minor ticks too
        ax.xaxis.set_minor_formatter(plain)
    ax.tick_params(axis="x", which="both", labelsize=8)
    ax.set_xlabel(f"request ms, log (TTFT at {headline.get('prompt_tokens')}-token prompt + "
                  f"{headline.get('answer_tokens')} answer tokens at p50 decode)")
    ax.set_ylabel(f"{headline['name']} (95% CI)")
    ax.set_title(f"{headline['name']} against request latency (up and left is better)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # below the axes: it never hides a point or a label
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    place_labels(ax, [(r["request_ms"], r["score"]["value"], r["name"]) for r in points],
                 [whisker_box(ax, r) for r in points])
    return save_png(fig, path)


def write_plots(report: dict, out_dir: str | Path) -> list[Path]:
    """Write the PNGs into `out_dir`; return their paths (the first three only when a model was measured)."""
    out = Path(out_dir)
    models = report["models"] + report.get("peers", [])
    paths = [speed_and_memory(models, out / "speed_memory.png"), size_vs_quality(models, out / "size_quality.png"),
             quality_vs_speed(models, out / "quality_speed.png")] if models else []
    if report.get("headline"):
        paths.append(headline_vs_latency(report["headline"], out / "headline_latency.png"))
    return paths
