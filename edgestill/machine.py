"""The machine a measurement ran on: CPU model, cores, OS, RAM, Python, onnxruntime, tool and git versions.

    python -m edgestill.machine      # prints the dict as JSON

Every benchmark record and side tool's report carries this dict (or its `one_line`), so two runs can
only be compared knowing where each ran. Stdlib only (psutil is used when installed): boards run it.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import edgestill

REPO = Path(__file__).resolve().parent.parent  # the checkout git_commit() asks; None outside git


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":")[0].strip() in ("model name", "Hardware", "Model"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def ram_gb() -> float | None:
    """Total physical memory in GiB (psutil, else /proc/meminfo: boards may lack psutil)."""
    try:
        import psutil

        return round(psutil.virtual_memory().total / (1 << 30), 1)
    except ImportError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / (1 << 20), 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def physical_cores() -> int | None:
    try:
        import psutil

        return psutil.cpu_count(logical=False)
    except ImportError:
        return None


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """HEAD of the checkout the tool runs from, with `-dirty` for uncommitted changes; None outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def load_average() -> float | None:
    """The 1-minute load average when the run started (None where the OS has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def machine_info() -> dict:
    """Everything about this machine and software that a timing depends on."""
    return {
        "cpu": cpu_model(),
        "arch": platform.machine(),
        "cores_logical": os.cpu_count(),
        "cores_physical": physical_cores(),
        "ram_gb": ram_gb(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "executable": sys.executable,  # which Python ran (a board's bench.remote_python, or its venv)
        "onnxruntime": package_version("onnxruntime"),
        "tool_version": edgestill.__version__,
        "git_commit": git_commit(),
        "load_avg_1m": load_average(),  # other work on the machine skews every timing
    }


def one_line(machine: dict) -> str:
    """A short human line: `Intel Xeon ..., 2 cores, 24 GiB, Linux ..., onnxruntime 1.31.1`."""
    commit = (machine.get("git_commit") or "no git")[:12]
    return (f"{machine.get('cpu')} ({machine.get('arch')}), {machine.get('cores_logical')} cores, "
            f"{machine.get('ram_gb')} GiB RAM, {machine.get('os')}, Python {machine.get('python')}, "
            f"onnxruntime {machine.get('onnxruntime')}, edgestill {machine.get('tool_version')} ({commit}), "
            f"load average {machine.get('load_avg_1m')} at start")


def device_line(machine: dict) -> str:
    """A measured device in a line: phone model and Android version when there, CPU, cores, RAM, OS,
    the Python that ran and onnxruntime."""
    phone = [machine[k] if k == "device_model" else f"Android {machine[k]}"
             for k in ("device_model", "android_version") if machine.get(k)]
    python = f"Python {machine.get('python')}" + (f" ({machine['executable']})" if machine.get("executable") else "")
    return ", ".join([*phone, f"{machine.get('cpu')} ({machine.get('arch')})", f"{machine.get('cores_logical')} cores",
                      f"{machine.get('ram_gb')} GiB RAM", str(machine.get("os")), python,
                      f"onnxruntime {machine.get('onnxruntime')}"])


if __name__ == "__main__":
    print(json.dumps(machine_info(), indent=2))
