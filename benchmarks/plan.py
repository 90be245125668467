"""What one benchmark run measures: the models (bundle x engine) and the grid of settings.

A `Model` is something one engine runs: every bundle in our runtime, the same bundle in
onnxruntime-genai, the teacher's Hugging Face folder in PyTorch (`transformers-eager`), and in
llama.cpp (llama-cpp-python) the student's exported `gguf-*/` folders and the teacher's GGUF file.
A `Point` is one (threads, prompt_tokens, gen_tokens) of the grid: every recipe setting may be a
list and every combination is measured (`bench.threads=[1,2] bench.prompt_tokens=[64,256]`).
Each (model, point, target) gives one record.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

from edgestill.recipe import Bench

IN_PROCESS_PEERS = ("onnxruntime-genai", "transformers-eager")


@dataclass(frozen=True)
class Model:
    path: Path
    engine: str
    name: str
    role: str


@dataclass(frozen=True)
class Point:
    threads: int
    prompt_tokens: int
    gen_tokens: int


def as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def points(bench: Bench) -> list[Point]:
    """Every combination of the grid's settings, in the order given (the first is the headline)."""
    return [Point(t, p, g) for t, p, g in itertools.product(as_list(bench.threads), as_list(bench.prompt_tokens),
                                                            as_list(bench.gen_tokens))]


def manifest_of(bundle: Path) -> dict:
    try:
        return json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def bundle_model(bundle: Path, engine: str = "edgestill-runtime") -> Model:
    manifest = manifest_of(bundle)
    return Model(bundle, engine, manifest.get("name") or bundle.name, manifest.get("role", "student"))


def distill_report(build_dir: Path) -> dict:
    """`build_dir/student/distill_report.json`, or {} before distillation has written it."""
    path = build_dir / "student" / "distill_report.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def teacher_hf_dir(build_dir: Path) -> Path | None:
    """The teacher's Hugging Face folder named in the distill report, when it is on this machine."""
    folder = (distill_report(build_dir).get("teacher") or {}).get("dir")
    return Path(folder) if folder and Path(folder, "config.json").is_file() else None


def models_for(bundles: list[Path], engines: list[str], build_dir: Path) -> tuple[list[Model], list[str]]:
    """(models to measure on the local target, notes on peers that were skipped)."""
    models, notes = [], []
    if "edgestill-runtime" in engines:
        models += [bundle_model(b) for b in bundles]
    if "onnxruntime-genai" in engines:
        models += [bundle_model(b, "onnxruntime-genai") for b in bundles]
    if "transformers-eager" in engines:
        teacher = teacher_hf_dir(build_dir)
        teacher_bundles = [bundle_model(b) for b in bundles if manifest_of(b).get("role") == "teacher"]
        if teacher is None:
            notes.append("transformers-eager: skipped, no teacher Hugging Face folder (distill_report.json "
                         "teacher.dir) on this machine")
        elif not teacher_bundles:
            notes.append("transformers-eager: skipped, the run has no teacher bundle to compare with")
        else:
            models.append(Model(teacher, "transformers-eager", teacher_bundles[0].name, "teacher"))
    if "llama.cpp" in engines and llama_cpp_installed():
        ggufs = gguf_models(build_dir)
        models += ggufs
        if not ggufs:
            notes.append("llama.cpp: no GGUF to run (add gguf-q8_0 to export.precisions; the teacher's GGUF is "
                         "named in distill_report.json when it came from one)")
    return models, notes


def llama_cpp_installed() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def gguf_models(build_dir: Path) -> list[Model]:
    """The student's `gguf-*/` folders (exported, with a manifest) and the teacher's GGUF file (the
    distill report's teacher.gguf), for the llama.cpp engine."""
    models = [bundle_model(folder, "llama.cpp") for folder in sorted(build_dir.glob("gguf-*"))
              if (folder / "manifest.json").is_file()]
    teacher = (distill_report(build_dir).get("teacher") or {}).get("gguf")
    if teacher and Path(teacher).is_file():
        models.append(Model(Path(teacher), "llama.cpp", f"teacher-{Path(teacher).stem}", "teacher"))
    return models


def facts(model: Model) -> dict:
    """What an error record says about the model (no file is opened beyond manifest.json)."""
    manifest = manifest_of(model.path) if model.path.is_dir() else {}
    return {"name": model.name, "bundle": str(model.path), "role": model.role, "precision": manifest.get("precision"),
            "params": manifest.get("params"), "engine": model.engine}


def settings(point: Point, bench: Bench, target: str) -> dict:
    return {"target": target, "threads": point.threads, "prompt_tokens": point.prompt_tokens,
            "gen_tokens": point.gen_tokens, "warmup": bench.warmup, "repetitions": bench.repetitions}
