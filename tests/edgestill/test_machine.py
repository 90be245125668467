"""edgestill.machine: the machine description every record and side tool carries."""

from __future__ import annotations

import subprocess
import sys

from edgestill import machine


def test_importable_and_usable_without_torch():
    code = "import sys, edgestill.machine as m; m.one_line(m.machine_info()); assert 'torch' not in sys.modules"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert done.returncode == 0, done.stderr


def test_without_psutil_ram_comes_from_meminfo_and_cores_are_unknown(monkeypatch):
    monkeypatch.setitem(sys.modules, "psutil", None)  # `import psutil` now raises ImportError
    assert machine.physical_cores() is None
    ram = machine.ram_gb()
    assert ram is None or ram > 0


def test_one_line_names_cpu_cores_and_short_commit():
    info = {"cpu": "Cortex-A76", "arch": "aarch64", "cores_logical": 4, "ram_gb": 7.6, "git_commit": "0123456789abcdef"}
    line = machine.one_line(info)
    assert line.startswith("Cortex-A76 (aarch64), 4 cores, 7.6 GiB RAM") and "(0123456789ab)" in line
