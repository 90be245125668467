"""One uniform precision preset built into an ONNX graph: calibrated copy (if any) -> builder -> graph edits.

    from edgestill.export.build import build_uniform
    quantization = build_uniform(student_dir, tmp_bundle, preset("int8"), log_file, calibration=teacher_jsonl)

The preset (export/quantize.py) says which transforms run first (smoothing, GPTQ: their copies
come from export/calibrated.py), then onnxruntime-genai's builder writes the graph
(export/onnx_build.py) and the int8 presets tie the embedding lookup to the LM head's matrix
(export/tie_embedding.py). Mixed presets build two of these and splice them (export/mixed.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from edgestill.export.calibrated import CalibratedCopies, calibrated_sources
from edgestill.export.calibration import calibration_ids
from edgestill.export.onnx_build import build_onnx
from edgestill.export.quantize import Preset
from edgestill.export.tie_embedding import tie_int8_embedding_file


def ties_embeddings(model_dir: Path) -> bool:
    """Whether the checkpoint's LM head is its embedding matrix (config tie_word_embeddings)."""
    return bool(json.loads((model_dir / "config.json").read_text()).get("tie_word_embeddings", False))


def build_uniform(model_dir: Path, bundle_dir: Path, chosen: Preset, log_file: Path,
                  calibration: Path | None = None, instruction: str = "",
                  fallback_texts: list[str] = (), copies: CalibratedCopies | None = None) -> dict | None:
    """Builder + the uniform preset's transformations into `bundle_dir`; return manifest["quantization"].

    A smoothed or GPTQ preset calibrates on the train split of `calibration` (data/teacher.jsonl),
    or on the prompts of `fallback_texts` when there is no such file, and is built from the
    smoothed (then GPTQ-rounded) copy of `model_dir` (taken from `copies` when given)."""
    quantization = dict(chosen.quantization or {}) or None
    work = bundle_dir.with_name(bundle_dir.name + ".calibrated")
    try:
        source = model_dir
        if chosen.smooth or chosen.gptq:
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
