"""The `edgestill` command: usage and exit 2 without (or with an unknown) subcommand, a line per
subcommand in `--help`, and every subcommand's own complete `--help` under its edgestill name."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgestill.cli import COMMANDS

EDGESTILL = shutil.which("edgestill", path=str(Path(sys.executable).parent))


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([EDGESTILL, *args], capture_output=True, text=True, timeout=300)


def test_the_console_script_is_installed():
    assert EDGESTILL, "edgestill is not on the venv's bin/: pip install -e ."


@pytest.mark.parametrize("args", [(), ("frobnicate",), ("--frob",)])
def test_no_or_unknown_subcommand_prints_usage_and_exits_2(args):
    done = run(*args)
    assert done.returncode == 2 and done.stderr.startswith("usage: edgestill {distill,export,bench,")
    assert "Traceback" not in done.stderr and done.stderr.rstrip().splitlines()[-1].startswith("edgestill: error:")


def test_help_lists_every_subcommand_with_one_line():
    done = run("--help")
    assert done.returncode == 0
    listed = [line.split()[0] for line in done.stdout.splitlines() if line.startswith("  ")]
    assert listed == list(COMMANDS)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_subcommand_has_its_own_help(command):
    done = run(command, "--help")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(f"usage: edgestill {command}"), done.stdout[:200]
    assert "-h, --help" in done.stdout


def test_a_user_mistake_is_one_line_through_the_command(tmp_path):
    done = run("distill", str(tmp_path / "missing.yaml"))
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "missing.yaml" in done.stderr


def test_python_dash_m_runs_the_same_stage():
    done = subprocess.run([sys.executable, "-m", "edgestill.export", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--overwrite" in done.stdout
