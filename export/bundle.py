"""Export one Hugging Face folder to one validated bundle folder (the function the CLI calls).

    from export import export_bundle
    export_bundle("build/default/student", "build/default/bundle-int8", "int8", role="student",
                  instruction="Summarize ...", eval_texts=["A paragraph ..."])

Steps: the builder writes into a temp folder next to the target; the model's own tokenizer
files are copied over the builder's; a first manifest.json makes the folder openable by the
runtime; validation runs it against PyTorch; the final manifest.json (with the numbers) is
written last and the temp folder is renamed into place, so a killed export never leaves a half
bundle. An existing bundle whose manifest verifies is kept (skipped) unless `force`.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from export.manifest import describe_model, prompt_template, write_manifest
from export.onnx_build import build_onnx
from export.quantize import Preset, preset
from export.tie_embedding import tie_int8_embedding_file
from export.validate import check_fp32, compare, load_torch_model
from runtime import Bundle, BundleError

log = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                   "special_tokens_map.json")


def existing_bundle(out_dir: Path, precision: str) -> dict | None:
    """The manifest of a finished, intact bundle of this precision at `out_dir`, else None."""
    if not (out_dir / "manifest.json").is_file():
        return None
    try:
        bundle = Bundle.open(out_dir)
    except BundleError as err:
        log.warning("%s; exporting it again", err)
        return None
    return bundle.manifest if bundle.manifest.get("precision") == precision else None


def copy_tokenizer(model_dir: Path, bundle_dir: Path) -> None:
    """Copy the model's tokenizer files over the builder's (they carry the chat template)."""
    for name in TOKENIZER_FILES:
        if (model_dir / name).is_file():
            shutil.copyfile(model_dir / name, bundle_dir / name)


def ties_embeddings(model_dir: Path) -> bool:
    """Whether the checkpoint's LM head is its embedding matrix (config tie_word_embeddings)."""
    return bool(json.loads((model_dir / "config.json").read_text()).get("tie_word_embeddings", False))


def build_model(model_dir: Path, bundle_dir: Path, chosen: Preset, log_file: Path) -> dict | None:
    """Builder + the preset's graph transformations; return manifest["quantization"]."""
    build_onnx(model_dir, bundle_dir, chosen, log_file)
    for file in bundle_dir.iterdir():
        file.chmod(0o644)  # the builder/onnx may leave 0600 files; bundles are copied to devices
    if chosen.tie_int8_embedding and ties_embeddings(model_dir) and tie_int8_embedding_file(bundle_dir):
        return {**chosen.quantization, "embedding": "int8 (tied to lm_head)"}
    return chosen.quantization


def export_bundle(model_dir, out_dir, precision: str, role: str, instruction: str,
                  eval_texts: list[str], name: str | None = None, source: dict | None = None,
                  threads: int | None = None, force: bool = False) -> dict:
    """Export `model_dir` (HF checkpoint) to a validated bundle at `out_dir`; return its manifest.

    Raises `ValidationError` if an fp32 bundle does not reproduce PyTorch.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if not force and (manifest := existing_bundle(out_dir, precision)) is not None:
        log.info("%s: up to date, skipped", out_dir)
        return manifest
    if not eval_texts:
        raise ValueError("export_bundle needs at least one validation text")
    start = time.perf_counter()
    tmp = out_dir.parent / f".{out_dir.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    log_file = out_dir.parent / f".{out_dir.name}.builder.log"
    quantization = build_model(model_dir, tmp, preset(precision), log_file)
    copy_tokenizer(model_dir, tmp)
    model_info, tokens = describe_model(tmp)
    torch_model = load_torch_model(model_dir)
    fields = {"name": name or f"{role}-{precision}", "role": role, "precision": precision,
              "quantization": quantization,
              "params": sum(p.numel() for p in torch_model.parameters()),
              "model": model_info, "tokens": tokens,
              "prompt": {"template": prompt_template(model_dir), "instruction": instruction},
              "source": {"model_dir": str(model_dir.resolve()), **(source or {})}}
    write_manifest(tmp, fields)  # lets the runtime open the folder for validation
    result = compare(Bundle.open(tmp, verify=False), torch_model, eval_texts, threads)
    if precision == "fp32":
        check_fp32(result, out_dir)
    fields["validation"] = result
    fields["quality"] = {k: result[k] for k in ("top1_agreement_vs_fp32", "greedy_matching_prefix_mean")}
    fields["export_seconds"] = round(time.perf_counter() - start, 1)
    manifest = write_manifest(tmp, fields)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    log_file.unlink(missing_ok=True)
    log.info("%s: %s, max |logit diff| %.2g, top-1 agreement %.3f, %.0f s", out_dir, precision,
             result["max_abs_logit_diff"], result["top1_agreement_vs_fp32"], fields["export_seconds"])
    return manifest
