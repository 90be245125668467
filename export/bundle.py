"""One Hugging Face folder -> one validated bundle folder: build, validate, manifest, atomic rename.

    from edgestill.export import ExportSettings, export_bundle
    settings = ExportSettings(instruction="Summarize ...", eval_texts=("A paragraph ...",),
                              quality_pairs=(("A paragraph ...", "The teacher's answer.", True),))
    export_bundle("build/default/student", "build/default/bundle-int8", "int8", settings)

Steps: the input folder is checked (export/inputs.py); the builder writes into a temp folder
next to the target; the model's own tokenizer files are copied over the builder's; a first
manifest.json makes the folder openable by the runtime; validation runs it against PyTorch
(fp32 must reproduce it); quality is measured on held-out teacher text and judged against the
preset's floor; the final manifest.json is written last and the temp folder is renamed into
place, so a killed export never leaves a half bundle that looks whole.

An existing folder at the target is kept when it is an intact bundle of the same preset exported
from the same weights (skipped, "up to date"); any other existing folder is refused unless
`overwrite`.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgestill.errors import UserError
from edgestill.export.build import build_uniform
from edgestill.export.calibrated import CalibratedCopies
from edgestill.export.inputs import check_model_dir, source_fingerprint
from edgestill.export.manifest import describe_model, prompt_template, write_manifest
from edgestill.export.mixed import build_mixed
from edgestill.export.quality import measure, sequences
from edgestill.export.quantize import Preset, preset, with_budget
from edgestill.export.validate import Reference, check_fp32, compare
from edgestill.runtime import Bundle, BundleError, Generator

log = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                   "special_tokens_map.json")


def existing_bundle(out_dir: Path, chosen: Preset, fingerprint: str, overwrite: bool,
                    task: dict | None = None) -> dict | None:
    """The manifest of an up-to-date bundle at `out_dir` (same preset, weights and, when given, manifest
    `task`); None if there is none (then export).

    Raises UserError for an existing folder that is not an intact, up-to-date bundle of this
    preset, unless `overwrite`.
    """
    if not out_dir.exists():
        return None
    try:
        manifest = Bundle.open(out_dir).manifest
    except BundleError as err:
        reason = str(err)
    else:
        if manifest.get("precision") != chosen.precision:
            reason = f"it holds a {manifest.get('precision')!r} bundle"
        elif not same_settings(manifest.get("quantization"), chosen.quantization):
            reason = "it was quantized with other settings"
        elif (manifest.get("source") or {}).get("fingerprint") != fingerprint:
            reason = "it was exported from other weights (stale)"
        elif task is not None and _task_of(manifest) != task:
            reason = f"its manifest task {manifest.get('task') or {}} is not this recipe's {task}"
        else:
            return manifest
    if overwrite:
        log.info("%s: %s; replacing it", out_dir, reason)
        return None
    raise UserError(f"output folder {out_dir} exists and is not an up-to-date {chosen.precision} bundle of "
                    f"this model ({reason}); pass --overwrite (recipe: export.overwrite=true) to replace it")


def _task_of(manifest: dict) -> dict:
    """A manifest's "task", a fields task's `verbatim` false when absent (bundles exported before it)."""
    task = dict(manifest.get("task") or {})
    return {**({"verbatim": False} if "fields" in task else {}), **task}


def same_settings(recorded: dict | None, wanted: dict | None) -> bool:
    """Whether a manifest's quantization record matches the preset's (the embedding note aside)."""
    if recorded is None or wanted is None:
        return recorded is wanted
    return all(recorded.get(k) == v for k, v in wanted.items() if k != "embedding")


def copy_tokenizer(model_dir: Path, bundle_dir: Path) -> None:
    """Copy the model's tokenizer files over the builder's (they carry the chat template)."""
    for name in TOKENIZER_FILES:
        if (model_dir / name).is_file():
            shutil.copyfile(model_dir / name, bundle_dir / name)


def judge(quality: dict, chosen: Preset) -> dict:
    """manifest["quality_floor"]: the preset's floor on top1_agreement_vs_fp32 and whether it holds."""
    value = quality.get("top1_agreement_vs_fp32")
    return {"metric": "top1_agreement_vs_fp32", "floor": chosen.floor, "value": value,
            "passed": value is not None and value >= chosen.floor}


@dataclass(frozen=True)
class ExportSettings:
    """How one bundle is exported; `edgestill export` fills it in from the recipe.

    `eval_texts` (inputs, at least one) drive validation against PyTorch; `quality_pairs`
    ((input, teacher answer, ended): the held-out teacher text) drive the quality figures.
    `calibration` (data/teacher.jsonl) is the train text calibrated presets use; `mixed_budget`
    overrides a mixed preset's byte budget. An existing bundle at the target is kept when it is
    up to date, else refused unless `overwrite`; `force` rebuilds it anyway."""

    instruction: str
    eval_texts: tuple[str, ...]
    role: str = "student"
    name: str | None = None
    source: dict = field(default_factory=dict)
    threads: int | None = None
    force: bool = False
    overwrite: bool = False
    quality_pairs: tuple[tuple[str, str, bool], ...] = ()
    calibration: Path | None = None
    mixed_budget: float | None = None
    labels: tuple[str, ...] = ()  # a label task's labels, carried in the manifest ("task": {"labels"})
    fields: tuple[str, ...] = ()  # a fields task's JSON fields, carried in the manifest ("task": {"fields"})
    verbatim: bool = False  # a fields task's values are spans of the input ("task": {"fields", "verbatim"})
    copy_bias: float = 0.0  # a free-text task's logit bonus for the input's tokens ("task": {"copy_bias"})


def build_model(model_dir: Path, bundle_dir: Path, chosen: Preset, log_file: Path, calibration: Path | None = None,
                instruction: str = "", fallback_texts: list[str] = (),
                copies: CalibratedCopies | None = None) -> dict | None:
    """The graph of preset `chosen` written into `bundle_dir` (uniform or mixed); manifest["quantization"]."""
    if not chosen.mixed:
        return build_uniform(model_dir, bundle_dir, chosen, log_file, calibration, instruction, fallback_texts, copies)
    if calibration is None or not Path(calibration).is_file():
        raise UserError(f"preset {chosen.precision} chooses its matmuls on the task's train text, and "
                        f"{calibration} is missing; run `edgestill distill RECIPE` first")
    return build_mixed(model_dir, bundle_dir, chosen, Path(calibration), instruction, log_file, copies)


def export_bundle(model_dir, out_dir, precision: str, settings: ExportSettings, reference: Reference | None = None,
                  qat: dict | None = None, copies: CalibratedCopies | None = None) -> dict:
    """Export `model_dir` (HF checkpoint) to a validated bundle at `out_dir`; return its manifest.

    `reference` shares one PyTorch model between presets (for a *-qat preset, `model_dir` is the
    student after the QAT pass, `reference` the fp32 student it came from, `qat` its report, kept
    in the manifest); `copies` shares calibrated copies between the presets of one run. Raises
    `ValidationError` if an fp32 bundle does not reproduce PyTorch; a bundle below its quality
    floor is written and marked (`manifest["quality_floor"]["passed"]` false): the caller decides.
    """
    model_dir, out_dir, s = Path(model_dir), Path(out_dir), settings
    chosen = with_budget(preset(precision), s.mixed_budget)
    check_model_dir(model_dir)
    fingerprint = source_fingerprint(model_dir)
    if not s.force and (manifest := existing_bundle(out_dir, chosen, fingerprint, s.overwrite,
                                                     task_shape(s))) is not None:
        log.info("%s: up to date, skipped", out_dir)
        return manifest
    if not s.eval_texts:
        raise ValueError("export_bundle needs at least one validation text")
    start = time.perf_counter()
    tmp = out_dir.parent / f".{out_dir.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    log_file = out_dir.parent / f".{out_dir.name}.builder.log"
    quantization = build_model(model_dir, tmp, chosen, log_file, s.calibration, s.instruction, list(s.eval_texts), copies)
    copy_tokenizer(model_dir, tmp)
    reference = reference or Reference(model_dir)
    fields = manifest_fields(model_dir, tmp, precision, s, quantization, reference.params, fingerprint, qat)
    write_manifest(tmp, fields)  # lets the runtime open the folder for validation
    fields.update(validate(Bundle.open(tmp, verify=False), reference, chosen, s, out_dir))
    fields["export_seconds"] = round(time.perf_counter() - start, 1)
    manifest = write_manifest(tmp, fields)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    log_file.unlink(missing_ok=True)
    log.info("%s: %s, max |logit diff| %.2g, top-1 vs fp32 %.3f (floor %.2f), %.0f s", out_dir, precision,
             fields["validation"]["max_abs_logit_diff"], fields["quality"]["top1_agreement_vs_fp32"], chosen.floor,
             fields["export_seconds"])
    return manifest


def task_shape(s: ExportSettings) -> dict:
    """The manifest's "task": a label task's labels, a fields task's fields and verbatim flag, a free-text
    task's copy bias when it has one ({} otherwise)."""
    return {**({"labels": list(s.labels)} if s.labels else {}),
            **({"fields": list(s.fields), "verbatim": s.verbatim} if s.fields else {}),
            **({"copy_bias": float(s.copy_bias)} if s.copy_bias else {})}


def manifest_fields(model_dir: Path, bundle_dir: Path, precision: str, s: ExportSettings, quantization: dict | None,
                    params: int, fingerprint: str, qat: dict | None) -> dict:
    """The manifest's description of the bundle, before validation adds its figures."""
    model_info, tokens = describe_model(bundle_dir)
    return {"name": s.name or f"{s.role}-{precision}", "role": s.role, "precision": precision,
            "quantization": quantization, "params": params, "model": model_info, "tokens": tokens,
            **({"qat": qat} if qat else {}), **({"task": task} if (task := task_shape(s)) else {}),
            "prompt": {"template": prompt_template(model_dir), "instruction": s.instruction},
            "source": {"model_dir": str(model_dir.resolve()), "fingerprint": fingerprint, **s.source}}


def validate(bundle: Bundle, reference: Reference, chosen: Preset, s: ExportSettings, out_dir: Path) -> dict:
    """The bundle against PyTorch (fp32 must reproduce it) and on the held-out teacher text:
    manifest["validation"], ["quality"] and ["quality_floor"]."""
    result = compare(bundle, reference, list(s.eval_texts), s.threads)
    if chosen.precision == "fp32":
        check_fp32(result, out_dir)
    quality = {"top1_agreement_vs_fp32": round(result["top1_agreement_vs_fp32"], 4),
               "greedy_matching_prefix_mean": result["greedy_matching_prefix_mean"]}
    if s.quality_pairs:  # held-out teacher text replaces the prompt-only agreement
        gen = Generator(bundle, threads=s.threads)
        quality.update(measure(gen, sequences(bundle, list(s.quality_pairs)), reference))
    return {"validation": result, "quality": quality, "quality_floor": judge(quality, chosen)}
