"""A size/quality sweep: several student sizes trained on the same teacher data, each exported and
benchmarked, then one chart of score against per-request latency and bundle size.

    edgestill sweep RECIPE [key=value ...] [--build-root build]      # or: make sweep RECIPE=...

The recipe's `sweep:` lists the sizes, each a change to `student:` (layers as a list or a count,
and the widths), e.g.

    sweep:
      - {name: l4, layers: 4}
      - {name: l8, layers: [0, 1, 2, 3, 4, 5, 6, 7]}
      - {name: l8-ffn768, layers: [0, 1, 2, 3, 4, 5, 6, 7], intermediate_size: 768}

Every size is checked against the teacher's shape (the student base's, with `student.base`) before
any work (more layers than it has, a layer it does not have, widths larger than its own or heads
that do not divide): one line, exit 2.
Point i builds `build/<name>-<point name>/` through the stage commands (`edgestill distill`,
`export --overwrite`, `bench`), as `make student` would; the first point's teacher data is copied
(hard links) to the others, so they train on the same inputs and answers and the teacher runs once;
so is its teacher bundle, which `export` then finds up to date instead of building it again.
A point whose `report/report.json` exists is skipped, so a killed sweep resumes where it stopped.
Then `python -m edgestill.benchmarks.sweep_chart` writes `build/<name>-sweep/` (sweep.json,
sweep.md, sweep.png) from the points' reports.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from edgestill.errors import UserError, cli_main
from edgestill.recipe import Recipe, SweepPoint, load_recipe, split_args

log = logging.getLogger("sweep")
STAGES = {"distill": "edgestill.distill", "export": "edgestill.export", "bench": "edgestill.benchmarks"}
STUDENT_KEYS = ("layers", "hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads")


def teacher_config(recipe: Recipe) -> dict:
    """The config.json of the model the students are cut from: the student base when there is one,
    else the teacher (the served teacher's tokenizer folder when it is served)."""
    from edgestill.distill.teacher import teacher_dir

    source = recipe.student.base or (recipe.teacher.tokenizer if recipe.teacher.source == "openai"
                                     else recipe.teacher.source)
    folder = teacher_dir(source)
    return json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))


def point_name(point: SweepPoint, i: int) -> str:
    return point.name or f"size{i}"


def check_point(point: SweepPoint, i: int, config: dict, recipe: Recipe) -> None:
    """UserError naming `sweep[i]` when the teacher cannot give this student."""
    where = f"{recipe.path}: sweep[{i}] ({point_name(point, i)})"
    n_layers, whose = config["num_hidden_layers"], "the student base" if recipe.student.base else "the teacher"
    layers = point.layers if point.layers is not None else recipe.student.layers
    if isinstance(layers, int) and not 1 <= layers <= n_layers:
        raise UserError(f"{where}: layers {layers}: {whose} has {n_layers} layers; ask for 1 to {n_layers}")
    if isinstance(layers, list):
        bad = [x for x in layers if not 0 <= x < n_layers]
        if bad or len(set(layers)) != len(layers) or not layers:
            raise UserError(f"{where}: layers {layers}: give distinct teacher layers 0 to {n_layers - 1}")
    heads = point.num_attention_heads or recipe.student.num_attention_heads or config["num_attention_heads"]
    kv = point.num_key_value_heads or recipe.student.num_key_value_heads or config.get("num_key_value_heads", heads)
    hidden = point.hidden_size or recipe.student.hidden_size or config["hidden_size"]
    for key, value in (("hidden_size", hidden), ("num_attention_heads", heads), ("num_key_value_heads", kv),
                       ("intermediate_size", point.intermediate_size or recipe.student.intermediate_size)):
        if value is not None and not 1 <= value <= config.get(key, value):
            raise UserError(f"{where}: {key} {value}: {whose}'s is {config.get(key)}; a student can only be "
                            "as wide or narrower")
    if hidden % heads or heads % kv:
        raise UserError(f"{where}: hidden_size {hidden} / {heads} attention heads / {kv} key-value heads: the hidden "
                        "size must split evenly over the heads and the heads over the key-value heads")


def overrides(recipe: Recipe, point: SweepPoint, i: int) -> list[str]:
    """The key=value overrides that turn the recipe into point i's recipe."""
    out = [f"name={recipe.name}-{point_name(point, i)}"]
    for key in STUDENT_KEYS:
        value = getattr(point, key)
        if value is not None:
            out.append(f"student.{key}={json.dumps(value)}")
    return out


def share_data(first: Path, build: Path) -> None:
    """Point `build`'s data/ at the first point's teacher data (hard links; a copy where links fail)."""
    if (build / "data" / "teacher.jsonl").is_file() or not (first / "data" / "teacher.jsonl").is_file():
        return
    build.mkdir(parents=True, exist_ok=True)
    shutil.copytree(first / "data", build / "data", copy_function=_link_or_copy, dirs_exist_ok=True)


def share_teacher_bundle(first: Path, build: Path) -> None:
    """Point `build`'s teacher bundle at the first point's (hard links; export checks it is up to date)."""
    source, target = first / "teacher-bundle-fp32", build / "teacher-bundle-fp32"
    if target.exists() or not (source / "manifest.json").is_file():
        return
    build.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, target, copy_function=_link_or_copy)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def run_stage(args: list[str]) -> None:
    """One stage command; exit 1 of export (a bundle under its floor) and of bench (a failed row) go on,
    as in `make student`; anything else stops the sweep."""
    cmd = [sys.executable, "-m", STAGES[args[0]], *args[1:]]
    log.info("edgestill %s", " ".join(args))
    code = subprocess.run(cmd).returncode
    if code not in (0, 1) or (code == 1 and args[0] == "distill"):
        raise UserError(f"sweep: `edgestill {' '.join(args)}` failed (exit {code}); fix it and run the sweep again "
                        "(finished sizes are kept)")


def run_point(recipe: Recipe, point: SweepPoint, i: int, build_root: Path, extra: list[str]) -> Path:
    """distill, export, bench of point i (skipped when its report exists); its report.json."""
    name = f"{recipe.name}-{point_name(point, i)}"
    report = build_root / name / "report" / "report.json"
    if report.is_file():
        log.info("sweep: %s is finished, skipped", name)
        return report
    args = [recipe.path, *extra, *overrides(recipe, point, i), "--build-root", str(build_root)]
    run_stage(["distill", *args])
    run_stage(["export", *args, "--overwrite"])
    run_stage(["bench", *args])
    return report


def sweep(recipe: Recipe, build_root: str | Path = "build", extra: list[str] = ()) -> Path:
    """Every size of `recipe.sweep`, then the chart; the sweep folder."""
    if not recipe.sweep:
        raise UserError(f"{recipe.path}: sweep: list the student sizes to compare, e.g. "
                        "sweep: [{name: l4, layers: 4}, {name: l8, layers: 8}]")
    names = [point_name(p, i) for i, p in enumerate(recipe.sweep)]
    if len(set(names)) != len(names):
        raise UserError(f"{recipe.path}: sweep: two sizes share a name ({', '.join(names)}); name each one")
    config = teacher_config(recipe)
    for i, point in enumerate(recipe.sweep):
        check_point(point, i, config, recipe)
    build_root = Path(build_root)
    first = build_root / f"{recipe.name}-{names[0]}"
    reports = []
    for i, point in enumerate(recipe.sweep):
        if i:
            share_data(first, build_root / f"{recipe.name}-{names[i]}")
            share_teacher_bundle(first, build_root / f"{recipe.name}-{names[i]}")
        reports.append(run_point(recipe, point, i, build_root, list(extra)))
    out = build_root / f"{recipe.name}-sweep"
    code = subprocess.run([sys.executable, "-m", "edgestill.benchmarks.sweep_chart", "--out", str(out),
                           *[f"{n}={r}" for n, r in zip(names, reports)]]).returncode
    if code != 0:
        raise UserError(f"sweep: the chart of {out} was not written (exit {code})")
    return out


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    overrides_, rest = split_args(argv)
    parser = argparse.ArgumentParser(prog="edgestill sweep", description=__doc__.split("\n")[0])
    parser.add_argument("recipe", help="a recipe with a `sweep:` list of student sizes")
    parser.add_argument("--build-root", default="build", help="folder holding the builds (default: build)")
    args = parser.parse_args(rest)
    out = sweep(load_recipe(args.recipe, overrides_), args.build_root, overrides_)
    print(out / "sweep.md")
    return 0


if __name__ == "__main__":
    cli_main(main)
