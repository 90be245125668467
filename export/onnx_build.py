"""Build the ONNX model with onnxruntime-genai's model builder, offline, from a local HF folder.

Runs `python -m onnxruntime_genai.models.builder -i MODEL_DIR -o OUT -p PRECISION -e cpu` in a
child process (the builder keeps global state and prints a lot; a child frees its memory and
keeps its output in the log file). It writes model.onnx(+.data), genai_config.json and
tokenizer files: the bundle layout of docs/contracts.md.

The child is forked from a `multiprocessing` forkserver that has imported the builder (torch,
transformers, onnx_ir) once, where the platform has one (Linux, macOS); elsewhere it is a fresh
`python -m` subprocess. Measured on the default student's int4 build (2-core Xeon): 4.8 s as a
subprocess, of which 3.8 s are imports, against 0.6 s per build from the forkserver; the files
are byte-identical. An export of all presets runs the builder 17 times.
"""

from __future__ import annotations

import multiprocessing
import os
import runpy
import subprocess
import sys
from pathlib import Path

from export.quantize import Preset


def build_onnx(model_dir: Path, out_dir: Path, preset: Preset, log_file: Path) -> None:
    """Write the builder's files for `model_dir` at `preset` into `out_dir`; raise on failure."""
    cache = out_dir.with_name(out_dir.name + ".cache")  # beside the bundle, not in it
    args = ["-i", str(model_dir), "-o", str(out_dir), "-p", preset.builder_precision, "-e", "cpu", "-c", str(cache)]
    if preset.extra_options():
        args += ["--extra_options", *preset.extra_options()]
    code = run_builder(args, log_file)
    _rmtree(cache)
    if code != 0 or not (out_dir / "model.onnx").is_file():
        tail = log_file.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"onnxruntime-genai builder failed (exit {code}) for {model_dir}; "
                           f"log {log_file}:\n{tail}")
    if preset.builder_precision == "fp16":
        drop_value_info(out_dir / "model.onnx")


BUILDER = "onnxruntime_genai.models.builder"
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
_forkserver = None


def run_builder(args: list[str], log_file: Path) -> int:
    """Run the builder's command line `args` in a child process, its output to `log_file`; return
    the exit code."""
    global _forkserver
    if "forkserver" not in multiprocessing.get_all_start_methods():
        with open(log_file, "w") as log:
            return subprocess.run([sys.executable, "-m", BUILDER, *args], stdout=log, stderr=subprocess.STDOUT,
                                  env={**os.environ, **OFFLINE}).returncode
    if _forkserver is None:
        _forkserver = multiprocessing.get_context("forkserver")
        _forkserver.set_forkserver_preload([BUILDER])
    child = _forkserver.Process(target=_builder_main, args=(args, str(log_file)))
    child.start()
    child.join()
    return child.exitcode


def _builder_main(args: list[str], log_file: str) -> None:
    """In the child: `python -m onnxruntime_genai.models.builder ARGS` with stdout/stderr to `log_file`."""
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.update(OFFLINE)
    sys.argv = [BUILDER, *args]
    runpy.run_module(BUILDER, run_name="__main__", alter_sys=True)


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
