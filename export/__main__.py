"""Export a recipe's student (and its teacher) to bundles: `python -m export RECIPE [key=value ...]`.

    python -m export recipes/default.yaml                      # bundle-fp32, bundle-int8, teacher-bundle-fp32
    python -m export recipes/default.yaml export.precisions=[int4] --build-root build

Reads `build/<name>/student/` (HF checkpoint + distill_report.json, written by
`python -m distill RECIPE`) and writes `build/<name>/bundle-<precision>/` for each of
`export.precisions`, plus `build/<name>/teacher-bundle-fp32/` from the teacher folder named in
distill_report.json. Each bundle is validated against PyTorch on the eval inputs in
`build/<name>/data/teacher.jsonl` (split "eval"), or the recipe's seed inputs. Bundles already
finished and intact are skipped; `--force` rebuilds them.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from edgestill.errors import UserError, cli_main
from edgestill.files import read_jsonl
from edgestill.recipe import Recipe, load_recipe, split_args
from export.bundle import export_bundle

log = logging.getLogger("export")
VALIDATION_TEXTS = 4


def eval_texts(recipe: Recipe, build: Path, n: int = VALIDATION_TEXTS) -> list[str]:
    """Up to `n` held-out inputs: eval records of data/teacher.jsonl, else the seed inputs."""
    records = [r["input"] for r in read_jsonl(build / "data" / "teacher.jsonl") if r.get("split") == "eval"]
    return (records or [e.input for e in recipe.task.seed_examples])[:n]


def read_student(recipe: Recipe, build: Path) -> tuple[Path, dict]:
    """(student folder, its distill_report.json); UserError if distill has not run."""
    student = build / "student"
    report_file = student / "distill_report.json"
    if not (student / "config.json").is_file() or not report_file.is_file():
        raise UserError(f"no finished student in {student} (config.json and distill_report.json); "
                        f"run `python -m distill {recipe.path}` first")
    return student, json.loads(report_file.read_text())


def teacher_folder(report: dict, student: Path) -> Path:
    folder = Path((report.get("teacher") or {}).get("dir", ""))
    if not (folder / "config.json").is_file():
        raise UserError(f"{student / 'distill_report.json'}: teacher.dir {str(folder)!r} is not a Hugging "
                        "Face folder; run `python -m distill RECIPE` again to rewrite the report")
    return folder


def export_recipe(recipe: Recipe, build_root: str | Path = "build", force: bool = False,
                  threads: int | None = None) -> list[dict]:
    """Export every bundle of `recipe`; return their manifests (student bundles, then the teacher)."""
    build = recipe.build_dir(build_root)
    student, report = read_student(recipe, build)
    teacher = teacher_folder(report, student)
    instruction = (report.get("task") or {}).get("instruction", recipe.task.instruction)
    texts = eval_texts(recipe, build)
    source = {"teacher": (report.get("teacher") or {}).get("source", recipe.teacher.source),
              "recipe": recipe.name}
    manifests = [export_bundle(student, build / f"bundle-{p}", p, "student", instruction, texts,
                               name=f"{recipe.name}-{p}", source=source, threads=threads, force=force)
                 for p in recipe.export.precisions]
    manifests.append(export_bundle(teacher, build / "teacher-bundle-fp32", "fp32", "teacher", instruction,
                                   texts, name="teacher-fp32", source=source, threads=threads, force=force))
    return manifests


def main(argv: list[str]) -> int:
    overrides, rest = split_args(argv)
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__.split("\n")[0])
    parser.add_argument("recipe")
    parser.add_argument("--build-root", default="build")
    parser.add_argument("--force", action="store_true", help="rebuild bundles that are up to date")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime threads for validation")
    args = parser.parse_args(rest)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    recipe = load_recipe(args.recipe, overrides)
    for m in export_recipe(recipe, args.build_root, args.force, args.threads):
        q = m["validation"]
        print(f"{m['name']}: {sum(f['bytes'] for f in m['files'].values()) / 1e6:.1f} MB, "
              f"top-1 vs fp32 {q['top1_agreement_vs_fp32']:.3f}, max |logit diff| {q['max_abs_logit_diff']:.2g}")
    return 0


if __name__ == "__main__":
    cli_main(main)
