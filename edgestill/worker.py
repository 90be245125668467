"""Run a worker command (`python -m ...` in a fresh process) and read its result: the JSON object
on the last non-empty line of its stdout (stdlib only).

    from edgestill.worker import run_json
    result = run_json([sys.executable, "-m", "edgestill.benchmarks.x", "--worker", ...], "x on bundle-int8")

A worker that exits 2 (a `UserError` through `edgestill.errors.cli_main`) raises `UserError`
with its one line; any other failure raises `WorkerError` naming what failed, the exit code, the
last stderr line and (unless `tail_chars=0`) the tail of its stderr.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any, Sequence

from edgestill.errors import UserError

TAIL_CHARS = 2000


class WorkerError(RuntimeError):
    """A worker process failed or printed no JSON result."""


def last_line(text: str | None) -> str:
    """The last non-empty line (without cli_main's `error: ` prefix), or `no output`."""
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1].removeprefix("error: ") if lines else "no output"


def _failure(what: str, proc: subprocess.CompletedProcess, tail_chars: int) -> WorkerError:
    message = f"{what} failed (exit {proc.returncode}): {last_line(proc.stderr)}"
    tail = (proc.stderr or "").strip()[-tail_chars:] if tail_chars else ""
    return WorkerError(message + (f"\nstderr tail:\n{tail}" if "\n" in tail else ""))


def result_of(proc: subprocess.CompletedProcess, what: str, tail_chars: int = TAIL_CHARS) -> Any:
    """The parsed last stdout line of a finished worker; UserError / WorkerError when it failed."""
    if proc.returncode == 2:
        raise UserError(last_line(proc.stderr))
    if proc.returncode != 0:
        raise _failure(what, proc, tail_chars)
    try:
        return json.loads(last_line(proc.stdout))
    except json.JSONDecodeError:
        raise WorkerError(f"{what}: no JSON result on the last line of its output: "
                          f"{last_line(proc.stdout)[:300]}") from None


def run_json(cmd: Sequence[str], what: str, timeout: float | None = None, tail_chars: int = TAIL_CHARS) -> Any:
    """Run `cmd`, return its parsed last stdout line (subprocess.TimeoutExpired past `timeout`)."""
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    return result_of(proc, what, tail_chars)
