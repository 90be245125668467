"""A long-lived process that runs onnxruntime-genai's model builder once per job, without paying
for its imports each time (export/onnx_build.py starts it; not meant to be run by hand).

    python -m edgestill.export.builder_worker     # reads job lines from stdin, answers exit codes on stdout

It imports the builder (torch, transformers, onnx_ir: most of a build's time) once. For each
job line, JSON `{"args": [...], "log": "path"}`, it forks a child that runs `python -m
onnxruntime_genai.models.builder ARGS` with its output going to the log file, waits for it and
writes the child's exit code as one line. Every build gets a fresh child, so no builder state
carries over. This process has run no torch kernel before it forks, so the children inherit no
thread pools. It exits when stdin closes (its parent ended, killed or not).

Why our own and not `multiprocessing`'s forkserver: a forkserver child imports the parent's
`__main__` script again, which breaks a user's script that calls `export_bundle` without an
`if __name__ == "__main__":` guard.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import traceback

BUILDER = "onnxruntime_genai.models.builder"
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def run_job(args: list[str], log: str) -> None:
    """In the forked child: the builder's command line `args`, stdout and stderr to `log`; never returns."""
    code = 1
    try:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        sys.argv = [BUILDER, *args]
        runpy.run_module(BUILDER, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BaseException:  # the builder's own failure: into its log, as `python -m` would print it
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve() -> None:
    os.environ.update(OFFLINE)  # inherited by every forked build
    __import__(BUILDER)  # the slow imports, once
    print("ready", flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:
            run_job(job["args"], job["log"])
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status), flush=True)


if __name__ == "__main__":
    serve()
