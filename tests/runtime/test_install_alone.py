"""The runtime installs and runs alone: a fresh venv without torch or transformers generates text.

The venv gets the repository through `pip install --no-deps` (from a copy holding only
pyproject.toml, edgestill/ and runtime/, so no build files land in the checkout) and, as its only
other packages, the runtime's dependencies (numpy, onnxruntime, tokenizers, jinja2 + MarkupSafe,
PyYAML), linked from this test venv's site-packages so the test needs no network. An app does
the same with `pip install edgestill` (or `pip install path/to/edgestill`). The test also runs
the runtime copied into an app folder (runtime/ + three stdlib-only files of edgestill/).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# top-level names in site-packages that make up the runtime's dependencies (+ their dist-info)
DEPENDENCIES = ("numpy", "numpy.libs", "onnxruntime", "tokenizers", "jinja2", "markupsafe", "yaml", "_yaml")

CODE = """
import importlib.util, json, sys
assert not [m for m in ("torch", "transformers", "optimum", "datasets") if importlib.util.find_spec(m)], "heavy"
from edgestill.runtime import Bundle, Generator
gen = Generator(Bundle.open(sys.argv[1]), threads=1)
text = gen.generate("The council voted to expand the bike lanes.", max_new_tokens=8, ignore_eos=True)
chat = gen.chat([{"role": "user", "content": "Hi"}], max_new_tokens=4, ignore_eos=True)
print(json.dumps({"text": text, "chat": chat, "file": __import__("runtime").__file__}))
"""


def _link_dependencies(site: Path) -> None:
    ours = Path(sysconfig.get_paths()["purelib"])
    for entry in ours.iterdir():
        name = entry.name.split("-")[0].lower()
        if entry.name in DEPENDENCIES or (entry.name.endswith(".dist-info") and name in
                                          {"numpy", "onnxruntime", "tokenizers", "jinja2", "markupsafe", "pyyaml"}):
            (site / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())


@pytest.mark.slow
def test_runtime_runs_in_a_venv_without_torch(tmp_path, fp32_bundle):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(ROOT / "pyproject.toml", src)
    for package in ("edgestill", "runtime"):
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False, system_site_packages=False)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                              "--no-build-isolation", "--target", str(site), str(src)],
                             capture_output=True, text=True, cwd=tmp_path)
    assert install.returncode == 0, install.stderr[-2000:]
    _link_dependencies(site)
    run = subprocess.run([python, "-c", CODE, str(fp32_bundle)], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout)
    assert out["file"].startswith(str(site)) and out["text"] and out["chat"]
    cli = subprocess.run([python, "-m", "edgestill.runtime", "generate", str(fp32_bundle), "--prompt", "Hello", "--json",
                          "--max-new-tokens", "3"], capture_output=True, text=True, cwd=tmp_path)
    assert cli.returncode == 0 and json.loads(cli.stdout)["prompt_tokens"] > 1, cli.stderr[-2000:]

    # copied into an app instead: runtime/ + edgestill/{__init__,errors,files}.py on the app's path
    app = tmp_path / "app"
    shutil.copytree(ROOT / "runtime", app / "runtime", ignore=shutil.ignore_patterns("__pycache__"))
    (app / "edgestill").mkdir()
    for name in ("__init__.py", "errors.py", "files.py"):
        shutil.copy(ROOT / "edgestill" / name, app / "edgestill" / name)
    run = subprocess.run([python, "-c", CODE, str(fp32_bundle)], capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(app), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout)["file"].startswith(str(app))
