"""Benchmark every bundle of a recipe and write `build/<name>/report/`.

    python -m benchmarks RECIPE [key=value ...] [--build-root build]
    python -m benchmarks compare A/report.json B/report.json

Finds `build/<name>/teacher-bundle-fp32/` and `build/<name>/bundle-*/` (each with a
manifest.json), measures each in a fresh subprocess (`benchmarks.measure`: load, TTFT, decode
speed, peak RSS), scores each on the eval split (`benchmarks.quality`), and writes
records.jsonl, report.json, report.md and PNG plots. Settings come from the recipe's `bench:`
section (`bench.threads=4`, `bench.repetitions=10`, `bench.quality_examples=0` to skip quality).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from tqdm import tqdm

from benchmarks.machine import machine_info
from benchmarks.measure import measure_in_subprocess
from benchmarks.quality import bundle_quality, eval_records
from benchmarks.report import build_report, merge_examples, write_report
from edgestill.errors import UserError, cli_main
from edgestill.recipe import Recipe, load_recipe, split_args

log = logging.getLogger("benchmarks")
N_EXAMPLES = 3


def find_bundles(build_dir: Path) -> list[Path]:
    """The teacher bundle (if any) and every `bundle-*` folder with a manifest.json."""
    candidates = [build_dir / "teacher-bundle-fp32", *sorted(build_dir.glob("bundle-*"))]
    bundles = [p for p in candidates if (p / "manifest.json").is_file()]
    if not bundles:
        raise UserError(f"no bundles in {build_dir} (looked for teacher-bundle-fp32/ and bundle-*/ with a "
                        "manifest.json); run `python -m export RECIPE` first")
    return bundles


def settings_of(recipe: Recipe, n_eval: int) -> dict:
    b = recipe.bench
    return {"recipe": recipe.name, "target": "local", "threads": b.threads, "prompt_tokens": b.prompt_tokens,
            "gen_tokens": b.gen_tokens, "repetitions": b.repetitions, "quality_examples": n_eval,
            "max_new_tokens": recipe.task.max_output_tokens, "bundle_sha256": "sha256 of manifest.json"}


def distill_figures(build_dir: Path) -> dict:
    """The distill report's quality (PyTorch student, before export), prefixed `distill_`."""
    path = build_dir / "student" / "distill_report.json"
    if not path.is_file():
        return {}
    quality = json.loads(path.read_text(encoding="utf-8")).get("quality") or {}
    return {f"distill_{k}": v for k, v in quality.items() if isinstance(v, (int, float))}


def measure_all(bundles: list[Path], recipe: Recipe) -> list[dict]:
    """One speed/memory record per bundle, each from its own subprocess."""
    b, records = recipe.bench, []
    for path in bundles:
        log.info("measuring %s (threads %d, %d prompt + %d generated tokens, %d repetitions)",
                 path.name, b.threads, b.prompt_tokens, b.gen_tokens, b.repetitions)
        rec = measure_in_subprocess(path, b.threads, b.prompt_tokens, b.gen_tokens, b.repetitions)
        log.info("  %s: load %.2f s, TTFT %.1f ms, %s tok/s, peak RSS %.0f MB", path.name, rec["load_s"],
                 rec["ttft_ms_p50"], rec["decode_tok_s_p50"], rec["peak_rss_mb"])
        records.append(rec)
    return records


def score_all(bundles: list[Path], records: list[dict], recipe: Recipe, evals: list[dict],
              build_dir: Path) -> dict[str, list[dict]]:
    """Fill each record's `quality`; return the per-example answers by model name."""
    rows_by_model, distilled = {}, distill_figures(build_dir)
    for path, rec in zip(bundles, records):
        rec["quality"] = distilled.copy() if rec["role"] == "student" else {}
        if not evals:
            continue
        with tqdm(total=len(evals), desc=f"quality {path.name}", unit="ex", leave=False) as bar:
            quality, rows = bundle_quality(path, evals, recipe.task.max_output_tokens, recipe.bench.threads, bar)
        rec["quality"].update(quality)
        rows_by_model[rec["name"]] = rows
        log.info("  %s: %s", path.name, quality)
    return rows_by_model


def run(recipe: Recipe, build_root: str | Path = "build") -> Path:
    """Benchmark every bundle of `recipe`; return the report folder."""
    build_dir = recipe.build_dir(build_root)
    bundles = find_bundles(build_dir)
    limit = recipe.bench.quality_examples
    evals = [] if limit == 0 else eval_records(build_dir / "data", limit)
    machine = machine_info()
    records = measure_all(bundles, recipe)
    rows_by_model = score_all(bundles, records, recipe, evals, build_dir)
    for rec in records:
        rec["machine"] = machine
    report = build_report(machine, settings_of(recipe, len(evals)), records,
                          merge_examples(rows_by_model, N_EXAMPLES))
    paths = write_report(build_dir / "report", report, records)
    log.info("wrote %s", ", ".join(str(p) for p in paths))
    return build_dir / "report"


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if argv and argv[0] == "compare":
        from benchmarks.compare import main as compare_main

        return compare_main(argv[1:])
    overrides, rest = split_args(argv)
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    parser.add_argument("recipe", help="the recipe YAML, e.g. recipes/default.yaml")
    parser.add_argument("--build-root", default="build", help="folder holding build/<name>/ (default: build)")
    args = parser.parse_args(rest)
    report_dir = run(load_recipe(args.recipe, overrides), args.build_root)
    print(report_dir / "report.md")
    return 0


if __name__ == "__main__":
    cli_main(main)
