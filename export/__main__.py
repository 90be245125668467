"""Export a recipe's student (and its teacher) to bundles: `edgestill export RECIPE [key=value ...]`.

    edgestill export recipes/default.yaml                      # bundle-fp32, bundle-int8, teacher-bundle-fp32
    edgestill export recipes/default.yaml export.precisions=[int4,int4-mixed] --overwrite

Reads `build/<name>/student/` (HF checkpoint + distill_report.json, written by
`edgestill distill RECIPE`) and writes `build/<name>/bundle-<precision>/` for each of
`export.precisions` (presets: export/quantize.py), plus `build/<name>/teacher-bundle-fp32/`
from the teacher folder named in distill_report.json. Each bundle is validated against PyTorch
on eval inputs and scored on the held-out teacher text (split "eval" of
`build/<name>/data/teacher.jsonl`; the recipe's seed examples if there is none). A summary goes
to stdout and `build/<name>/export_summary.json`.

Exit status: 0 when every bundle reaches its preset's quality floor; 1 when one does not (all
bundles are still written, the failing ones marked in their manifest.json); 2 for bad input.
Bundles already finished from the same weights and preset are kept (`--force` rebuilds them);
an existing folder that is not one (stale, damaged, foreign) is refused unless `--overwrite`
(or `export.overwrite=true`).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

from edgestill.errors import UserError, cli_main
from edgestill.export.bnb_preview import bitsandbytes_quality
from edgestill.export.bundle import ExportSettings, export_bundle
from edgestill.export.calibrated import CalibratedCopies, qat_pass
from edgestill.export.gguf_bundle import GGUF_PRESETS, export_gguf
from edgestill.export.inputs import source_fingerprint
from edgestill.export.qat import QatSettings, read_report
from edgestill.export.quality import eval_pairs
from edgestill.export.quantize import preset
from edgestill.export.validate import Reference
from edgestill.files import atomic_write_json
from edgestill.recipe import Recipe, load_recipe, split_args
from edgestill.teacher_data import read_split

log = logging.getLogger("export")
VALIDATION_TEXTS = 4


def eval_texts(recipe: Recipe, build: Path, n: int = VALIDATION_TEXTS) -> list[str]:
    """Up to `n` held-out inputs: eval records of data/teacher.jsonl, else the seed inputs."""
    records = [r.input for r in read_split(build / "data" / "teacher.jsonl", "eval", answered=False)]
    return (records or [e.input for e in recipe.task.seed_examples])[:n]


def read_student(recipe: Recipe, build: Path) -> tuple[Path, dict]:
    """(student folder, its distill_report.json); UserError if distill has not run."""
    student = build / "student"
    report_file = student / "distill_report.json"
    if not (student / "config.json").is_file() or not report_file.is_file():
        raise UserError(f"no finished student in {student} (config.json and distill_report.json); "
                        f"run `edgestill distill {recipe.path}` first")
    return student, json.loads(report_file.read_text())


def teacher_folder(report: dict, student: Path) -> Path | None:
    """The teacher's HF folder for its reference bundle; None for a served teacher with no local
    weights (nothing to export: the report compares with its answers alone)."""
    t = report.get("teacher") or {}
    folder = Path(t.get("dir", ""))
    if t.get("source") == "openai" and not ("dir" in t and list(folder.glob("*.safetensors"))):
        return None
    if not (folder / "config.json").is_file():
        raise UserError(f"{student / 'distill_report.json'}: teacher.dir {str(folder)!r} is not a Hugging "
                        "Face folder; run `edgestill distill RECIPE` again to rewrite the report")
    return folder


def export_recipe(recipe: Recipe, build_root: str | Path = "build", force: bool = False,
                  threads: int | None = None, overwrite: bool = False) -> list[dict]:
    """Export every bundle of `recipe`; return their manifests (student bundles, then the teacher)."""
    build = recipe.build_dir(build_root)
    student, report = read_student(recipe, build)
    teacher = teacher_folder(report, student)
    instruction = (report.get("task") or {}).get("instruction", recipe.task.instruction)
    texts = eval_texts(recipe, build)
    pairs = eval_pairs(build / "data" / "teacher.jsonl", [(e.input, e.output) for e in recipe.task.seed_examples])
    source = {"teacher": (report.get("teacher") or {}).get("source", recipe.teacher.source),
              "recipe": recipe.name}
    settings = ExportSettings(instruction=instruction, eval_texts=tuple(texts), source=source, threads=threads,
                              force=force, overwrite=overwrite or recipe.export.overwrite, quality_pairs=tuple(pairs),
                              calibration=build / "data" / "teacher.jsonl", mixed_budget=recipe.export.mixed_budget,
                              labels=tuple((report.get("task") or {}).get("labels") or recipe.task.labels),
                              fields=tuple((report.get("task") or {}).get("fields") or recipe.task.fields),
                              verbatim=bool((report.get("task") or {}).get("verbatim", recipe.task.verbatim)),
                              copy_bias=float(recipe.task.copy_bias))
    reference = _LazyReference(student)
    manifests = []
    for stale in build.glob(".calibrated-*"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=build, prefix=".calibrated-") as tmp:
        copies = CalibratedCopies(Path(tmp))  # smoothed/GPTQ copies shared by the presets
        for p in [p for p in recipe.export.precisions if p not in GGUF_PRESETS]:
            model_dir, qat = qat_source(recipe, build, student, instruction, p, copies)
            manifests.append(export_bundle(model_dir, build / f"bundle-{p}", p, replace(settings, name=f"{recipe.name}-{p}"),
                                           reference=reference, qat=qat, copies=copies))
    fp32 = build / "bundle-fp32" if (build / "bundle-fp32" / "manifest.json").is_file() else None
    for p in [p for p in recipe.export.precisions if p in GGUF_PRESETS]:  # after bundle-fp32, their greedy reference
        manifests.append(export_gguf(student, build / p, p, replace(settings, name=f"{recipe.name}-{p}"),
                                     reference, fp32))
    if teacher is None:
        log.info("the teacher is served with no local weights: no teacher bundle (the report compares its answers)")
        return manifests
    manifests.append(export_bundle(teacher, build / "teacher-bundle-fp32", "fp32",
                                   replace(settings, role="teacher", name="teacher-fp32")))
    return manifests


def qat_source(recipe: Recipe, build: Path, student: Path, instruction: str, precision: str,
               copies: CalibratedCopies | None = None) -> tuple[Path, dict | None]:
    """(folder to export, qat_report or None): for a *-qat preset, the student after the
    quantization-aware pass (build/<name>/student-<precision>/, reused while it is from the same
    student weights and settings; its GPTQ start shared through `copies`), else the student itself."""
    chosen = preset(precision)
    if not chosen.qat:
        return student, None
    settings = QatSettings(bits=chosen.bits, block=chosen.block, steps=recipe.export.qat_steps,
                           lr=recipe.export.qat_lr, seed=recipe.distill.seed, smooth=True)
    folder = build / f"student-{precision}"
    report = read_report(folder)
    fingerprint = source_fingerprint(student)
    if report and report.get("settings") == asdict(settings) and report.get("source_fingerprint") == fingerprint:
        log.info("%s: up to date, reused", folder)
        return folder, report
    return folder, qat_pass(student, folder, build / "data" / "teacher.jsonl", instruction, settings, copies)


class _LazyReference:
    """A Reference loaded on first use (skipped bundles need no PyTorch model)."""

    def __init__(self, model_dir: Path):
        self.model_dir, self._ref = model_dir, None

    def __getattr__(self, name):
        if self._ref is None:
            self._ref = Reference(self.model_dir)
        return getattr(self._ref, name)


def summary_row(m: dict) -> dict:
    """One line of the export summary: size, quality figures and the floor verdict."""
    floor, validation = m.get("quality_floor") or {}, m.get("validation") or {}
    return {"name": m["name"], "precision": m["precision"],
            "bytes": sum(f["bytes"] for f in m["files"].values()),
            "max_abs_logit_diff": validation.get("max_abs_logit_diff"),
            "top1_agreement_vs_fp32": validation.get("top1_agreement_vs_fp32"),  # GGUF files: from llama.cpp
            **(m.get("quality") or {}), "floor": floor.get("floor"), "passed": floor.get("passed", True),
            **({"not_validated": validation["skipped"]} if "skipped" in validation else {}),
            "export_seconds": m.get("export_seconds"),
            **({"qat_simulated_top1_vs_fp32": m["qat"]["simulated_top1_vs_fp32"]} if m.get("qat") else {})}


def print_summary(rows: list[dict]) -> None:
    for r in rows:
        extra = ""
        if "top1_agreement_vs_teacher" in r:
            extra = (f", top-1 vs teacher {r['top1_agreement_vs_teacher']:.3f}, "
                     f"ppl {r['perplexity_teacher_text']:.2f}")
        if "not_validated" in r:
            print(f"{r['name']}: {r['bytes'] / 1e6:.1f} MB, not validated: {r['not_validated']}")
            continue
        verdict = "ok" if r["passed"] else f"FAILS its floor {r['floor']}"
        print(f"{r['name']}: {r['bytes'] / 1e6:.1f} MB, top-1 vs fp32 {r['top1_agreement_vs_fp32']:.3f}{extra}, "
              f"max |logit diff| {r['max_abs_logit_diff']:.2g}: {verdict}")


def bitsandbytes_summary(recipe: Recipe, build: Path) -> dict:
    """export.bitsandbytes: the student under bitsandbytes in PyTorch, scored like the bundles."""
    student, report = read_student(recipe, build)
    instruction = (report.get("task") or {}).get("instruction", recipe.task.instruction)
    return bitsandbytes_quality(student, build / "data" / "teacher.jsonl", instruction, recipe.export.bitsandbytes)


def main(argv: list[str]) -> int:
    overrides, rest = split_args(argv)
    parser = argparse.ArgumentParser(prog="edgestill export", description=__doc__.split("\n")[0])
    parser.add_argument("recipe")
    parser.add_argument("--build-root", default="build")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing folders that are not up-to-date bundles (stale, damaged)")
    parser.add_argument("--force", action="store_true", help="rebuild up-to-date bundles too")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime threads for validation")
    args = parser.parse_args(rest)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    recipe = load_recipe(args.recipe, overrides)
    rows = [summary_row(m) for m in export_recipe(recipe, args.build_root, args.force, args.threads, args.overwrite)]
    summary = {"bundles": rows}
    if recipe.export.bitsandbytes:
        summary["pytorch_bitsandbytes"] = bitsandbytes_summary(recipe, recipe.build_dir(args.build_root))
    atomic_write_json(recipe.build_dir(args.build_root) / "export_summary.json", summary)
    print_summary(rows)
    for mode, r in summary.get("pytorch_bitsandbytes", {}).items():
        print(f"student in PyTorch with bitsandbytes {mode}: top-1 vs fp32 {r['top1_agreement_vs_fp32']:.3f}")
    failing = [r["name"] for r in rows if not r["passed"]]
    if failing:
        print(f"below their quality floor (written, marked in manifest.json): {', '.join(failing)}")
    return 1 if failing else 0


if __name__ == "__main__":
    cli_main(main)
