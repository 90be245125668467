"""The built wheel: `edgestill` is its only top-level name, its package data is inside, and it
works without the source tree.

The wheel is built once from a copy of the sources (so no build files land in the checkout).
- Runtime only: a fresh venv without torch or transformers, the wheel installed with `--no-deps`
  and, as its only other packages, the runtime's dependencies (numpy, onnxruntime, tokenizers,
  jinja2 + MarkupSafe, PyYAML) linked from this test venv: it generates from a tiny bundle, and
  the `edgestill generate` entry point does too. An app does the same with `pip install edgestill`.
- Everything: the wheel installed non-editable in front of this venv's packages (on PYTHONPATH,
  where the editable install's finder is not loaded), run from outside the repository: the CSV
  printer reads the record schema from the installed package data.
- The runtime copied into an app folder (edgestill/runtime/ + three stdlib-only core files).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("edgestill", "distill", "export", "runtime", "benchmarks")
# top-level names in site-packages that make up the runtime's dependencies (+ their dist-info)
DEPENDENCIES = ("numpy", "numpy.libs", "onnxruntime", "tokenizers", "jinja2", "markupsafe", "yaml", "_yaml")
DEPENDENCY_DISTS = {"numpy", "onnxruntime", "tokenizers", "jinja2", "markupsafe", "pyyaml"}

CODE = """
import importlib.util, json, sys
assert not [m for m in ("torch", "transformers", "optimum", "datasets") if importlib.util.find_spec(m)], "heavy"
from edgestill.runtime import Bundle, Generator
gen = Generator(Bundle.open(sys.argv[1]), threads=1)
text = gen.generate("The council voted to expand the bike lanes.", max_new_tokens=8, ignore_eos=True)
chat = gen.chat([{"role": "user", "content": "Hi"}], max_new_tokens=4, ignore_eos=True)
print(json.dumps({"text": text, "chat": chat, "file": __import__("edgestill.runtime").runtime.__file__}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    shutil.copy(ROOT / "pyproject.toml", src)
    for package in SOURCES:
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__", "*.md"))
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index",
                           "--no-build-isolation", "-w", str(out), str(src)], capture_output=True, text=True, cwd=src)
    assert done.returncode == 0, done.stderr[-2000:]
    return next(out.glob("edgestill-*.whl"))


def _install(wheel: Path, root: Path) -> tuple[Path, Path]:
    """A fresh venv under `root` with `wheel` installed (no dependencies): (its python, its site-packages)."""
    python, site = _install_empty(root)
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                           "--target", str(site), str(wheel)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return python, site


def _link_dependencies(site: Path) -> None:
    ours = Path(sysconfig.get_paths()["purelib"])
    for entry in ours.iterdir():
        name = entry.name.split("-")[0].lower()
        if entry.name in DEPENDENCIES or (entry.name.endswith(".dist-info") and name in DEPENDENCY_DISTS):
            (site / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())


def test_wheel_holds_one_top_level_name_and_its_package_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"edgestill"}, sorted(tops)
    for needed in ("edgestill/benchmarks/record.schema.json", "edgestill/runtime/bundle.py",
                   "edgestill/distill/train.py", "edgestill/export/bundle.py", "edgestill/cli.py"):
        assert needed in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "edgestill = edgestill.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


@pytest.mark.slow
def test_runtime_runs_from_the_wheel_in_a_venv_without_torch(tmp_path, wheel, fp32_bundle):
    python, site = _install(wheel, tmp_path / "venv")
    _link_dependencies(site)
    run = subprocess.run([python, "-c", CODE, str(fp32_bundle)], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout)
    assert out["file"].startswith(str(site)) and out["text"] and out["chat"]
    # the console script (pip --target puts it in site/bin)
    cli = subprocess.run([python, str(site / "bin" / "edgestill"), "generate", str(fp32_bundle), "--prompt", "Hello",
                          "--json", "--max-new-tokens", "3"], capture_output=True, text=True, cwd=tmp_path)
    assert cli.returncode == 0 and json.loads(cli.stdout)["prompt_tokens"] > 1, cli.stderr[-2000:]
    # a stage whose extra is not installed: one line naming what is missing, exit 2
    missing = subprocess.run([python, "-m", "edgestill.cli", "distill", "recipes/default.yaml"],
                             capture_output=True, text=True, cwd=tmp_path)
    assert missing.returncode == 2 and "edgestill[all]" in missing.stderr, missing.stderr[-2000:]
    assert "Traceback" not in missing.stderr


@pytest.mark.slow
def test_full_install_from_the_wheel_prints_records_as_csv(tmp_path, wheel):
    python, site = _install(wheel, tmp_path / "venv")
    records = tmp_path / "records.jsonl"
    example = json.loads((ROOT / "benchmarks" / "record_example.json").read_text())
    records.write_text("".join(json.dumps(r) + "\n" for r in example))
    env = {"PYTHONPATH": sysconfig.get_paths()["purelib"], "PATH": "/usr/bin:/bin"}
    run = subprocess.run([python, "-c", "import edgestill.benchmarks.record as r, sys; print(r.__file__); "
                          "from edgestill.cli import main; main(['csv', sys.argv[1]])", str(records)],
                         capture_output=True, text=True, cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    where, header, *rows = run.stdout.splitlines()
    assert where.startswith(str(site))  # the wheel's copy, not the checkout's
    assert header.startswith("schema,schema_version,") and ",name," in header and len(rows) == len(example)


@pytest.mark.slow
def test_runtime_copied_into_an_app_folder_runs(tmp_path, fp32_bundle):
    """runtime/ as edgestill/runtime/ + edgestill/{__init__,errors,files,spans}.py on the app's path."""
    python, site = _install_empty(tmp_path / "venv")
    _link_dependencies(site)
    app = tmp_path / "app"
    shutil.copytree(ROOT / "runtime", app / "edgestill" / "runtime", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("__init__.py", "errors.py", "files.py", "spans.py"):
        shutil.copy(ROOT / "edgestill" / name, app / "edgestill" / name)
    run = subprocess.run([python, "-c", CODE, str(fp32_bundle)], capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(app), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout)["file"].startswith(str(app))


def _install_empty(root: Path) -> tuple[Path, Path]:
    venv.create(root, with_pip=False, system_site_packages=False)
    python = root / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    return python, site
