"""Build the ONNX model with onnxruntime-genai's model builder, offline, from a local HF folder.

Runs `python -m onnxruntime_genai.models.builder -i MODEL_DIR -o OUT -p PRECISION -e cpu` in a
subprocess (the builder keeps global state and prints a lot; a subprocess frees its memory and
keeps its output in OUT/../builder.log). It writes model.onnx(+.data), genai_config.json and
tokenizer files: the bundle layout of docs/contracts.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from export.quantize import Preset


def build_onnx(model_dir: Path, out_dir: Path, preset: Preset, log_file: Path) -> None:
    """Write the builder's files for `model_dir` at `preset` into `out_dir`; raise on failure."""
    cache = out_dir.with_name(out_dir.name + ".cache")  # beside the bundle, not in it
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(model_dir),
           "-o", str(out_dir), "-p", preset.builder_precision, "-e", "cpu", "-c", str(cache)]
    if preset.extra_options():
        cmd += ["--extra_options", *preset.extra_options()]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with open(log_file, "w") as log:
        result = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    _rmtree(cache)
    if result.returncode != 0 or not (out_dir / "model.onnx").is_file():
        tail = log_file.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"onnxruntime-genai builder failed (exit {result.returncode}) for {model_dir}; "
                           f"log {log_file}:\n{tail}")
    if preset.builder_precision == "fp16":
        drop_value_info(out_dir / "model.onnx")


def drop_value_info(path: Path) -> None:
    """Remove the intermediate shape annotations (`graph.value_info`) of the ONNX file at `path`.

    The builder's fp16 CPU graph annotates some tensors with symbolic dims that do not hold at run
    time; onnxruntime's memory planner trusts them and, on the second run (one token after a
    prefill), fails in an inserted fp32 cast: "Shape mismatch attempting to re-use buffer
    {1,1,576} != {1,9,576}" (onnxruntime 1.31.1, on x86 and on emulated ARM64 alike). Without the
    annotations onnxruntime infers the shapes itself and the graph runs. The weights file is not
    touched (its tensors stay external)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    del model.graph.value_info[:]
    onnx.save(model, str(path))
    path.chmod(0o644)


def save_with_data(model, path: Path) -> None:
    """Write ONNX `model` to `path` with its tensors in one `<name>.data` file beside it (replaced),
    both readable by all (onnx's writer leaves 0600 files; bundles are copied to devices)."""
    import onnx

    data = path.with_name(path.name + ".data")
    data.unlink(missing_ok=True)
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location=data.name, size_threshold=1024)
    for f in (path, data):
        f.chmod(0o644)


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
