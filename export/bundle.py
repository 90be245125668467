"""Export one Hugging Face folder to one validated bundle folder (the function the CLI calls).

    from edgestill.export import export_bundle
    export_bundle("build/default/student", "build/default/bundle-int8", "int8", role="student",
                  instruction="Summarize ...", eval_texts=["A paragraph ..."],
                  quality_pairs=[("A paragraph ...", "The teacher's answer.", True)])

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

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

from edgestill.errors import UserError
from edgestill.export.inputs import check_model_dir, source_fingerprint
from edgestill.export.manifest import describe_model, prompt_template, write_manifest
from edgestill.export.onnx_build import build_onnx
from edgestill.export.quality import measure, sequences
from edgestill.export.quantize import Preset, preset, with_budget
from edgestill.export.tie_embedding import tie_int8_embedding_file
from edgestill.export.validate import Reference, check_fp32, compare
from edgestill.runtime import Bundle, BundleError, Generator

log = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                   "special_tokens_map.json")


def existing_bundle(out_dir: Path, chosen: Preset, fingerprint: str, overwrite: bool) -> dict | None:
    """The manifest of an up-to-date bundle at `out_dir`; None if there is none (then export).

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
        else:
            return manifest
    if overwrite:
        log.info("%s: %s; replacing it", out_dir, reason)
        return None
    raise UserError(f"output folder {out_dir} exists and is not an up-to-date {chosen.precision} bundle of "
                    f"this model ({reason}); pass --overwrite (recipe: export.overwrite=true) to replace it")


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


def ties_embeddings(model_dir: Path) -> bool:
    """Whether the checkpoint's LM head is its embedding matrix (config tie_word_embeddings)."""
    return bool(json.loads((model_dir / "config.json").read_text()).get("tie_word_embeddings", False))


def build_model(model_dir: Path, bundle_dir: Path, chosen: Preset, log_file: Path,
                calibration: Path | None = None, instruction: str = "",
                fallback_texts: list[str] = (), copies: CalibratedCopies | None = None) -> dict | None:
    """Builder + the preset's graph transformations; return manifest["quantization"].

    A mixed preset calibrates on the train split of `calibration` (data/teacher.jsonl); a smoothed
    or GPTQ preset too, or on the prompts of `fallback_texts` when there is no such file, and is
    built from the smoothed (then GPTQ-rounded) copy of `model_dir` (taken from `copies` when given)."""
    if chosen.mixed:
        if calibration is None or not Path(calibration).is_file():
            raise UserError(f"preset {chosen.precision} chooses its matmuls on the task's train text, and "
                            f"{calibration} is missing; run `edgestill distill RECIPE` first")
        from edgestill.export.mixed import build_mixed

        return build_mixed(model_dir, bundle_dir, chosen, Path(calibration), instruction, log_file, copies)
    quantization = dict(chosen.quantization or {}) or None
    work = bundle_dir.with_name(bundle_dir.name + ".calibrated")
    try:
        source = model_dir
        if chosen.smooth or chosen.gptq:
            from edgestill.export.smooth import calibration_ids

            ids = calibration_ids(model_dir, calibration, instruction, list(fallback_texts))
            _, source, records = calibrated_sources(model_dir, work, chosen, ids, copies)
            quantization.update(records)
        build_onnx(source, bundle_dir, chosen, log_file)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for file in bundle_dir.iterdir():
        file.chmod(0o644)  # the builder/onnx may leave 0600 files; bundles are copied to devices
    if chosen.tie_int8_embedding and ties_embeddings(model_dir) and tie_int8_embedding_file(bundle_dir):
        return {**quantization, "embedding": "int8 (tied to lm_head)"}
    return quantization


class CalibratedCopies:
    """The smoothed and GPTQ-rounded copies of students made during one export run, kept under
    `root` and shared by the run's presets: int8, int4-gptq, int4-gptq-mixed and int4-qat's pass all
    start from the same smoothed copy, and the last three round it the same way. Keyed by the source weights, the
    calibration sequences and the settings, so a copy is only reused where it would come out the
    same. Measured on the default student: smoothing 4.2 s, GPTQ 18-19 s per bit width."""

    def __init__(self, root: Path):
        self.root, self._made = Path(root), {}

    def get(self, key: tuple, make) -> tuple[Path, object]:
        """(folder, record) for `key`: `make(folder)` writes the folder and returns its record."""
        if key not in self._made:
            folder = self.root / f"copy-{len(self._made)}"
            self._made[key] = (folder, make(folder))
        return self._made[key]


def calibrated_sources(model_dir: Path, work: Path, chosen: Preset, ids: list[list[int]],
                       copies: CalibratedCopies | None = None) -> tuple[Path, Path, dict]:
    """For a smoothed and/or GPTQ preset, copies of `model_dir` under `work` (or taken from
    `copies`), calibrated on the token sequences `ids`: (the smoothed copy, else `model_dir`; the
    copy to build from: its GPTQ rounding, else the former; the manifest's quantization entries)."""
    from edgestill.export.gptq import GptqSettings, gptq_checkpoint
    from edgestill.export.smooth import smooth_checkpoint

    copies = copies or CalibratedCopies(work)
    base = (source_fingerprint(model_dir), hashlib.sha256(json.dumps(ids).encode()).hexdigest())
    records: dict = {}
    smoothed = model_dir
    if chosen.smooth:
        folder, record = copies.get(("smooth", *base), lambda out: smooth_checkpoint(model_dir, out, ids))
        if record is None:
            records["activation_smoothing"] = "none (architecture without Llama-style projections)"
        else:
            records["activation_smoothing_calibration"] = record
            smoothed = folder
    if not chosen.gptq:
        return smoothed, smoothed, records
    settings = GptqSettings(chosen.bits, chosen.block)
    folder, record = copies.get(("gptq", *base, chosen.smooth, settings),
                                lambda out: gptq_checkpoint(smoothed, out, ids, settings))
    records["gptq_calibration"] = {k: v for k, v in record.items() if k != "relative_output_error"}
    records["gptq_relative_output_error"] = record["relative_output_error"]
    return smoothed, folder, records


def judge(quality: dict, chosen: Preset) -> dict:
    """manifest["quality_floor"]: the preset's floor on top1_agreement_vs_fp32 and whether it holds."""
    value = quality.get("top1_agreement_vs_fp32")
    return {"metric": "top1_agreement_vs_fp32", "floor": chosen.floor, "value": value,
            "passed": value is not None and value >= chosen.floor}


def export_bundle(model_dir, out_dir, precision: str, role: str, instruction: str,
                  eval_texts: list[str], name: str | None = None, source: dict | None = None,
                  threads: int | None = None, force: bool = False, overwrite: bool = False,
                  quality_pairs: list[tuple[str, str, bool]] | None = None,
                  reference: Reference | None = None, qat: dict | None = None,
                  calibration: Path | None = None, mixed_budget: float | None = None,
                  copies: CalibratedCopies | None = None) -> dict:
    """Export `model_dir` (HF checkpoint) to a validated bundle at `out_dir`; return its manifest.

    `eval_texts` (inputs) drive validation; `quality_pairs` ((input, teacher answer, ended), the
    held-out teacher text) drive the quality figures. An existing folder at `out_dir` is kept
    if it is this bundle, up to date; else refused unless `overwrite`; `force` rebuilds it anyway.
    `reference` shares one PyTorch model between presets (for a *-qat preset, `model_dir` is the
    student after the QAT pass, `reference` the fp32 student it came from, `qat` its report, kept in the
    manifest). `calibration` (data/teacher.jsonl) is the train text a mixed preset chooses on,
    `mixed_budget` overrides its byte budget. `copies` shares calibrated copies between the presets
    of one run (export_recipe). Raises `ValidationError` if an fp32
    bundle does not reproduce PyTorch; a bundle below its quality floor is written and marked
    (`manifest["quality_floor"]["passed"]` false): the caller decides what that means.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    chosen = with_budget(preset(precision), mixed_budget)
    check_model_dir(model_dir)
    fingerprint = source_fingerprint(model_dir)
    if not force and (manifest := existing_bundle(out_dir, chosen, fingerprint, overwrite)) is not None:
        log.info("%s: up to date, skipped", out_dir)
        return manifest
    if not eval_texts:
        raise ValueError("export_bundle needs at least one validation text")
    start = time.perf_counter()
    tmp = out_dir.parent / f".{out_dir.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    log_file = out_dir.parent / f".{out_dir.name}.builder.log"
    quantization = build_model(model_dir, tmp, chosen, log_file, calibration, instruction, eval_texts, copies)
    copy_tokenizer(model_dir, tmp)
    model_info, tokens = describe_model(tmp)
    reference = reference or Reference(model_dir)
    fields = {"name": name or f"{role}-{precision}", "role": role, "precision": precision,
              "quantization": quantization, "params": reference.params,
              "model": model_info, "tokens": tokens, **({"qat": qat} if qat else {}),
              "prompt": {"template": prompt_template(model_dir), "instruction": instruction},
              "source": {"model_dir": str(model_dir.resolve()), "fingerprint": fingerprint, **(source or {})}}
    write_manifest(tmp, fields)  # lets the runtime open the folder for validation
    bundle = Bundle.open(tmp, verify=False)
    result = compare(bundle, reference, eval_texts, threads)
    if precision == "fp32":
        check_fp32(result, out_dir)
    quality = {"top1_agreement_vs_fp32": round(result["top1_agreement_vs_fp32"], 4),
               "greedy_matching_prefix_mean": result["greedy_matching_prefix_mean"]}
    if quality_pairs:  # held-out teacher text replaces the prompt-only agreement
        quality.update(measure(Generator(bundle, threads=threads), sequences(bundle, quality_pairs), reference))
    fields.update(validation=result, quality=quality, quality_floor=judge(quality, chosen),
                  export_seconds=round(time.perf_counter() - start, 1))
    manifest = write_manifest(tmp, fields)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    log_file.unlink(missing_ok=True)
    log.info("%s: %s, max |logit diff| %.2g, top-1 vs fp32 %.3f (floor %.2f), %.0f s", out_dir, precision,
             result["max_abs_logit_diff"], quality["top1_agreement_vs_fp32"], chosen.floor,
             fields["export_seconds"])
    return manifest
