"""Benchmark every bundle of a recipe, with its peers, on every target, and write `build/<name>/report/`
(`report-<target>/` for a run that does not measure this machine, e.g. `report-ssh-pi-board/`).

    edgestill bench RECIPE [key=value ...] [--build-root build] [--bundles DIR ...] [--target T ...]
    edgestill bench compare A/records.jsonl B/records.jsonl

Finds `build/<name>/teacher-bundle-fp32/` and `build/<name>/bundle-*/` (or takes `--bundles`),
measures each (model, engine, target, threads, prompt_tokens, gen_tokens) in a fresh process
(`benchmarks.measure`: load, TTFT, decode speed, peak RSS): our runtime on every target, and on
`local` the peers (onnxruntime-genai on the same bundle, the teacher in PyTorch eager, llama.cpp when
installed). Scores each bundle on the eval split (`benchmarks.quality`) and writes records.jsonl,
records.csv, report.json, report.md and PNG plots. Settings come from the recipe's `bench:` section;
every grid setting may be a list (`bench.threads=[1,2]`). A failed row is an error record: the
others are still measured and written, and the exit code is 1 (0 with a warning when only peers failed).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path

from tqdm import tqdm

from edgestill.benchmarks.gguf_quality import gguf_outputs
from edgestill.benchmarks.headline import answer_tokens, build_headline
from edgestill.benchmarks.peers import find_gguf, llama_bench_path, run_llama_bench
from edgestill.benchmarks.plan import (
    Point,
    as_list,
    distill_report,
    llama_cpp_installed,
    models_for,
    points,
)
from edgestill.benchmarks.quality import (
    bundle_quality,
    carried_figures,
    eval_records,
    field_figures,
    gains_note,
    gains_over,
    label_figures,
    score,
)
from edgestill.benchmarks.record import (
    SCHEMA_NAME,
    SCHEMA_VERSION,
    error_record,
    is_ok,
    now_utc,
)
from edgestill.benchmarks.report import (
    SHIPPED_ENGINES,
    build_report,
    merge_examples,
    write_report,
)
from edgestill.benchmarks.target_adb import run_adb
from edgestill.benchmarks.target_local import run_local
from edgestill.benchmarks.target_ssh import run_ssh
from edgestill.errors import UserError, cli_main
from edgestill.intervals import verdict
from edgestill.machine import machine_info
from edgestill.recipe import BENCH_TARGET, Recipe, load_recipe, split_args

log = logging.getLogger("benchmarks")
N_EXAMPLES = 3


def find_bundles(build_dir: Path) -> list[Path]:
    """The teacher bundle (if any) and every `bundle-*` folder with a manifest.json."""
    candidates = [build_dir / "teacher-bundle-fp32", *sorted(build_dir.glob("bundle-*"))]
    bundles = [p for p in candidates if (p / "manifest.json").is_file()]
    if not bundles:
        raise UserError(f"no bundles in {build_dir} (looked for teacher-bundle-fp32/ and bundle-*/ with a "
                        "manifest.json); run `edgestill export RECIPE` first")
    return bundles


def settings_of(recipe: Recipe, n_eval: int, targets: list[str], run_id: str) -> dict:
    b = recipe.bench
    return {"recipe": recipe.name, "targets": targets, "threads": b.threads, "prompt_tokens": b.prompt_tokens,
            "gen_tokens": b.gen_tokens, "warmup": b.warmup, "repetitions": b.repetitions,
            "engines": b.engines, "pin_threads": b.pin_threads, "quality_examples": n_eval,
            "max_new_tokens": recipe.task.max_output_tokens, "bundle_sha256": "sha256 of manifest.json",
            "run_id": run_id}


def distill_figures(build_dir: Path) -> dict:
    """The distill report's quality (PyTorch student, before export), prefixed `distill_`."""
    quality = distill_report(build_dir).get("quality") or {}
    return {f"distill_{k}": v for k, v in quality.items() if isinstance(v, (int, float))}


BASELINE_NAMES = {"sft": "the same student trained on hard targets only", "init": "its untrained initialisation",
                  "echo_input": "the input itself as the answer (no model)"}


def baseline_note(build_dir: Path) -> list[str]:
    """One note with the distill report's baselines (ROUGE-L vs the teacher on the eval split), so
    that the report's student rows can be read against them; none without a distill report."""
    baselines = distill_report(build_dir).get("baselines") or {}
    parts = [f"{BASELINE_NAMES.get(name, name)} {b['quality']['rouge_l_vs_teacher']:.3f}"
             for name, b in baselines.items()
             if name != "teacher_noise" and "rouge_l_vs_teacher" in (b.get("quality") or {})]
    parts += [f"the teacher itself with {100 * r['sigma']:g}% weight noise {r['quality']['rouge_l_vs_teacher']:.3f}"
              for r in (baselines.get("teacher_noise") or {}).get("runs", [])]
    if not parts:
        return []
    return ["baselines (distill_report.json, PyTorch, ROUGE-L vs the teacher on the eval split): " + "; ".join(parts),
            *gain_note(distill_report(build_dir))]


def student_note(build_dir: Path) -> list[str]:
    """One note on where the student came from (distill_report.json `student`): the teacher's layers,
    random weights, or a pretrained base (named, with whether it shares the teacher's tokenizer)."""
    s = distill_report(build_dir).get("student") or {}
    if not s:
        return []
    size = f"student: {s['params'] / 1e6:.1f}M params, {len(s.get('layers') or [])} layers"
    if s.get("init") == "base":
        how = ("the teacher's vocabulary, so soft targets apply" if s.get("same_tokenizer_as_teacher")
               else "a vocabulary of its own: the teacher's text re-tokenized, sequence-level KD")
        return [f"{size} of the pretrained base {s.get('base')} ({s.get('base_architecture')}, "
                f"{s.get('base_layers')} layers; {how}; chat template: {s.get('chat_template')})"]
    if s.get("init") == "random":
        return [f"{size}, random weights in the teacher's shape"]
    return [f"{size}, copied from the teacher's layers {s.get('layers')}"]


def gain_note(report: dict) -> list[str]:
    """The student's ROUGE-L with its 95% interval and its paired gain over each baseline (on the
    same eval inputs), from the distill report's `comparisons`; none for a report without them."""
    q, comparisons = report.get("quality") or {}, report.get("comparisons") or {}
    if not comparisons or not q.get("rouge_l_vs_teacher_ci95"):
        return []
    lo, hi = q["rouge_l_vs_teacher_ci95"]
    parts = [f"minus {BASELINE_NAMES.get(name, name)} {g['gain']:+.3f} ({g['ci95'][0]:+.3f} to {g['ci95'][1]:+.3f}: "
             f"{verdict(g)} it)" for name, gains in comparisons.items() if (g := gains.get("rouge_l_vs_teacher"))]
    return [f"student ROUGE-L vs the teacher {q['rouge_l_vs_teacher']:.3f} (95% bootstrap interval {lo:.3f} to "
            f"{hi:.3f}, {q.get('n_eval')} eval inputs); paired gains, 95% intervals: " + "; ".join(parts)]


def llama_rows(build_dir: Path, grid: list[Point], recipe: Recipe, notes: list[str]) -> list[dict]:
    """llama-bench on the student's GGUF at every point, when both are there; else a note why not."""
    exe = llama_bench_path()
    if exe is None:
        notes.append("llama.cpp: neither llama-cpp-python (pip install 'edgestill[llama]') nor llama-bench is "
                     "installed, so no llama.cpp rows")
        return []
    ggufs = find_gguf(build_dir)
    if not ggufs:
        notes.append(f"llama.cpp: no GGUF in {build_dir}/gguf/ or student/; convert the student with llama.cpp's "
                     "convert_hf_to_gguf.py to add llama.cpp rows")
        return []
    b, records, machine = recipe.bench, [], machine_info()
    for gguf in ggufs:
        for p in grid:
            settings = {"target": "local", "threads": p.threads, "prompt_tokens": p.prompt_tokens,
                        "gen_tokens": p.gen_tokens, "warmup": 0, "repetitions": b.repetitions}
            try:
                rec = run_llama_bench(exe, gguf, p.threads, p.prompt_tokens, p.gen_tokens, b.repetitions)
                records.append({"schema": SCHEMA_NAME, "schema_version": SCHEMA_VERSION, "status": "ok",
                                "error": None, **rec, **settings, "machine": machine, "started_at": now_utc()})
            except (RuntimeError, OSError, ValueError) as err:
                records.append(error_record({"name": gguf.stem, "bundle": str(gguf), "engine": "llama.cpp"},
                                            settings, str(err)))
    return records


def measure_targets(bundles: list[Path], recipe: Recipe, targets: list[str], build_dir: Path,
                    notes: list[str]) -> list[dict]:
    """Every record of the run: each target in turn; the local one with the peers."""
    b, grid = recipe.bench, points(recipe.bench)
    models, skipped = models_for(bundles, b.engines, build_dir)
    records = []
    for target in targets:
        if target == "local":
            notes += skipped
            records += run_local(models, grid, b)
            if "llama.cpp" in b.engines and not llama_cpp_installed():  # llama-bench, when on PATH
                records += llama_rows(build_dir, grid, recipe, notes)
        elif target.startswith("ssh://"):
            records += run_ssh(target, models, grid, b)
        else:
            records += run_adb(target, models, grid, b)
    return records


def score_all(bundles: list[Path], records: list[dict], recipe: Recipe, evals: list[dict],
              build_dir: Path) -> dict[str, list[dict]]:
    """Fill each record's `quality`; return the per-example answers by model name."""
    rows_by_model, distilled, by_name = {}, distill_figures(build_dir), {}
    threads = as_list(recipe.bench.threads)[0]
    for path in bundles:
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
        name = manifest.get("name") or path.name
        by_name[name] = distilled.copy() if manifest.get("role", "student") == "student" else {}
        if not evals:
            continue
        if manifest.get("role") == "teacher" and not any(r.get("label") is not None for r in evals):
            # The teacher against its own answers says nothing (export already checked that the bundle
            # reproduces the PyTorch teacher token for token) and cost 27 s of `make student`; with
            # labels its score against the ground truth is worth the time.
            by_name[name].update(carried_figures(path))
            continue
        try:
            with tqdm(total=len(evals), desc=f"quality {path.name}", unit="ex", leave=False) as bar:
                quality, rows = bundle_quality(path, evals, recipe.task.max_output_tokens, threads, bar)
        except Exception as err:  # a bundle that does not load: its speed rows already say why
            log.error("  %s: no quality figures (%s)", path.name, " ".join(str(err).split())[:300])
            continue
        by_name[name].update(quality)
        rows_by_model[name] = rows
        log.info("  %s: %s", path.name, quality)
    if evals and "llama.cpp" in recipe.bench.engines and llama_cpp_installed():
        by_name.update(gguf_scores(build_dir, evals, recipe, threads))
    for rec in records:
        rec["quality"] = {**by_name.get(rec["name"], {}), **(rec.get("quality") or {})}
    return rows_by_model


def gguf_scores(build_dir: Path, evals: list[dict], recipe: Recipe, threads: int) -> dict[str, dict]:
    """The task score of each exported GGUF in llama.cpp (benchmarks/gguf_quality.py), by manifest name,
    beside its export figures."""
    out = {}
    for folder in sorted(build_dir.glob("gguf-*")):
        if not (folder / "manifest.json").is_file():
            continue
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        figures = {k: v for k, v in (manifest.get("validation") or {}).items() if k == "top1_agreement_vs_fp32"}
        try:
            with tqdm(total=len(evals), desc=f"quality {folder.name}", unit="ex", leave=False) as bar:
                outputs = gguf_outputs(folder, evals, recipe.task.max_output_tokens, threads, bar)
        except Exception as err:  # a file llama.cpp cannot run: its speed rows already say why
            log.error("  %s: no quality figures (%s)", folder.name, " ".join(str(err).split())[:300])
            continue
        task = manifest.get("task") or {}
        figures.update(score(outputs, evals), **label_figures(outputs, evals, task.get("labels")),
                       **field_figures(outputs, evals, task.get("fields")))
        out[manifest.get("name") or folder.name] = figures
        log.info("  %s: %s", folder.name, figures)
    return out


def fp32_student(bundles: list[Path]) -> str | None:
    """The manifest name of the fp32 student bundle among `bundles` (the quantized ones' reference)."""
    for path in bundles:
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
        if manifest.get("role", "student") == "student" and manifest.get("precision") == "fp32":
            return manifest.get("name") or path.name
    return None


def request_tokens(bundles: list[Path], recipe: Recipe) -> int:
    """Answer tokens of one request for the headline's latency estimate (benchmarks.headline.answer_tokens),
    in the first student bundle's tokenizer."""
    students = [p for p in bundles if json.loads((p / "manifest.json").read_text(encoding="utf-8")).get(
        "role", "student") == "student"]
    return answer_tokens((students or bundles)[0], recipe.task.labels, recipe.task.max_output_tokens)


def given_bundles(paths: list[str]) -> list[Path]:
    """`--bundles` folders, each checked to be a bundle (the error names the folder)."""
    bundles = [Path(p) for p in paths]
    for b in bundles:
        if not (b / "manifest.json").is_file():
            raise UserError(f"--bundles: {b} is not a bundle folder (no manifest.json); run `edgestill export RECIPE`")
    return bundles


def check_targets(targets: list[str]) -> list[str]:
    for t in targets:
        if not BENCH_TARGET.match(t):
            raise UserError(f"--target: '{t}' is not a target; use local, ssh://[user@]host[:port] or adb://serial")
    return targets


def report_folder(targets: list[str]) -> str:
    """`report` when the run measures this machine; else `report-<targets>` (`report-ssh-pi-board`), so
    a board's run never replaces the local report or another board's."""
    if "local" in targets:
        return "report"
    return "report-" + "_".join(re.sub(r"[^A-Za-z0-9]+", "-", t).strip("-") for t in targets)


def run(recipe: Recipe, build_root: str | Path = "build", bundles: list[str] | None = None,
        targets: list[str] | None = None) -> tuple[Path, list[dict]]:
    """Benchmark `recipe`'s bundles (or `bundles`) on its targets (or `targets`); (report folder, records)."""
    build_dir = recipe.build_dir(build_root)
    paths = given_bundles(bundles) if bundles else find_bundles(build_dir)
    targets = check_targets(targets) if targets else recipe.bench.targets
    limit = recipe.bench.quality_examples
    evals = [] if limit == 0 else eval_records(build_dir / "data", limit)
    machine, run_id, notes = machine_info(), now_utc().replace(":", "").replace("-", ""), []
    records = measure_targets(paths, recipe, targets, build_dir, notes)
    notes += student_note(build_dir) + baseline_note(build_dir)
    rows_by_model = score_all(paths, records, recipe, evals, build_dir)
    for rec in records:
        rec["run_id"] = run_id
        if rec.get("target") == "local" and not rec.get("machine"):
            rec["machine"] = machine  # error rows: where it was tried
    reference = fp32_student(paths)
    gains = gains_over(rows_by_model, reference) if reference else {}
    notes += gains_note(gains, reference)
    report = build_report(machine, settings_of(recipe, len(evals), targets, run_id), records,
                          merge_examples(rows_by_model, N_EXAMPLES), notes)
    report["gains_over_fp32_student"] = gains
    report["headline"] = build_headline(distill_report(build_dir), report["models"], rows_by_model, evals,
                                        request_tokens(paths, recipe), as_list(recipe.bench.prompt_tokens)[0],
                                        getattr(recipe.task, "fields", None))
    out = build_dir / report_folder(targets)
    paths_written = write_report(out, report, records)
    log.info("wrote %s", ", ".join(str(p) for p in paths_written))
    return out, records


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if argv and argv[0] == "compare":
        from edgestill.benchmarks.compare import main as compare_main

        return compare_main(argv[1:])
    overrides, rest = split_args(argv)
    parser = argparse.ArgumentParser(prog="edgestill bench", description=__doc__.split("\n")[0])
    parser.add_argument("recipe", help="the recipe YAML, e.g. recipes/default.yaml")
    parser.add_argument("--build-root", default="build", help="folder holding build/<name>/ (default: build)")
    parser.add_argument("--bundles", nargs="+", metavar="DIR", help="bundle folders to measure (default: all of "
                        "build/<name>/); quality and ratios still use build/<name>/data and student/")
    parser.add_argument("--target", nargs="+", metavar="T", dest="targets",
                        help="local, ssh://[user@]host[:port], adb://serial (default: the recipe's bench.targets)")
    args = parser.parse_args(rest)
    report_dir, records = run(load_recipe(args.recipe, overrides), args.build_root, args.bundles, args.targets)
    print(report_dir / "report.md")
    failed = [r for r in records if not is_ok(r)]
    if failed:
        ours = [r for r in failed if r.get("engine", "edgestill-runtime") in SHIPPED_ENGINES]
        print(f"{'error' if ours else 'warning'}: {len(failed)} of {len(records)} measurements failed "
              f"(see {report_dir / 'report.md'}):", file=sys.stderr)
        for r in failed:
            print(f"  {r['name']} ({r.get('engine', 'edgestill-runtime')}, {r['target']}): {r['error']}",
                  file=sys.stderr)
        return 1 if ours else 0  # a failed peer is reported, but only our bundles' rows fail the run
    return 0


if __name__ == "__main__":
    cli_main(main)
