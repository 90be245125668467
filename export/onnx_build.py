"""Build the ONNX model with onnxruntime-genai's model builder, offline, from a local HF folder.

Runs `python -m onnxruntime_genai.models.builder -i MODEL_DIR -o OUT -p PRECISION -e cpu` in a
child process (the builder keeps global state and prints a lot; a child frees its memory and
keeps its output in the log file). It writes model.onnx(+.data), genai_config.json and
tokenizer files: the bundle layout of docs/contracts.md.

The child is forked from a worker process that has imported the builder (torch, transformers,
onnx_ir) once (export/builder_worker.py), on Linux; elsewhere (macOS, where forking a process that
has loaded system frameworks is unsafe, as CPython's own default to spawn there says; Windows)
it is a fresh `python -m` subprocess (the builder's imports are most of a build's time; both
paths write byte-identical files). An export of all presets runs the builder 17 times.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from edgestill.export.builder_worker import BUILDER, OFFLINE
from edgestill.export.quantize import Preset


def build_onnx(model_dir: Path, out_dir: Path, preset: Preset, log_file: Path) -> None:
    """Write the builder's files for `model_dir` at `preset` into `out_dir`; raise on failure."""
    cache = out_dir.with_name(out_dir.name + ".cache")  # beside the bundle, not in it
    args = ["-i", str(Path(model_dir).absolute()), "-o", str(Path(out_dir).absolute()), "-p",
            preset.builder_precision, "-e", "cpu", "-c", str(cache.absolute())]  # the worker has its own cwd
    if preset.extra_options():
        args += ["--extra_options", *preset.extra_options()]
    code = run_builder(args, Path(log_file).absolute())
    _rmtree(cache)
    if code != 0 or not (out_dir / "model.onnx").is_file():
        tail = log_file.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"onnxruntime-genai builder failed (exit {code}) for {model_dir}; "
                           f"log {log_file}:\n{tail}")
    if preset.builder_precision == "fp16":
        drop_value_info(out_dir / "model.onnx")


USE_WORKER = sys.platform.startswith("linux")  # False: every build is a fresh `python -m` subprocess
_worker: subprocess.Popen | None = None
_worker_lock = threading.Lock()


def run_builder(args: list[str], log_file: Path) -> int:
    """Run the builder's command line `args` in a child process, its output to `log_file`; return
    the exit code. Through the long-lived worker (export/builder_worker.py) on Linux; elsewhere, or
    if the worker cannot start, as a fresh `python -m` subprocess."""
    with _worker_lock:
        worker = _running_worker()
        if worker is not None:
            try:
                worker.stdin.write(json.dumps({"args": args, "log": str(log_file)}) + "\n")
                worker.stdin.flush()
                answer = worker.stdout.readline()
                if answer.strip().lstrip("-").isdigit():
                    return int(answer)
            except (BrokenPipeError, OSError):
                pass
            except BaseException:  # interrupted mid-job: its answer would be read as the next job's
                _stop_worker()
                raise
            _stop_worker()  # it died mid-job: this job runs the slow way
    with open(log_file, "w") as log:
        return subprocess.run([sys.executable, "-m", BUILDER, *args], stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, **OFFLINE}).returncode


def _running_worker() -> subprocess.Popen | None:
    """The worker, started on first use (None when USE_WORKER is off or it fails to start). It
    stays up, holding the builder's imports (~300 MB), until this process exits."""
    global _worker
    if not USE_WORKER:
        return None
    if _worker is not None and _worker.poll() is None:
        return _worker
    root = str(Path(__file__).resolve().parent.parent)  # where `export` imports from
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    _worker = subprocess.Popen([sys.executable, "-m", "edgestill.export.builder_worker"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               env={**os.environ, "PYTHONPATH": path})  # it sets OFFLINE itself
    if _worker.stdout.readline().strip() != "ready":
        _stop_worker()
        return None
    return _worker


@atexit.register
def _stop_worker() -> None:
    global _worker
    if _worker is not None:
        try:
            _worker.stdin.close()
        except OSError:
            pass
        try:
            _worker.wait(timeout=10)
        except subprocess.TimeoutExpired:
            _worker.kill()
        _worker = None


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
