"""The files an app or a device needs to run the runtime, laid out as the `edgestill` package.

    files = runtime_files()                     # [(local path, "edgestill/..."), ...]
    root = link_tree(files, tmp)                # tmp/edgestill/... as symlinks; put `tmp` on PYTHONPATH

Found from wherever edgestill is installed (a source checkout maps edgestill.runtime to runtime/,
a wheel holds it inside edgestill/), so tools that run the runtime in another Python (an ssh
board, an emulated ARM64 core) ship the same files either way. Stdlib only.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def package_dir(name: str) -> Path:
    """The folder of package `name` (e.g. "edgestill.runtime"), without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package {name} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def runtime_files() -> list[tuple[Path, str]]:
    """(local path, path inside the tree) of the edgestill core modules and the runtime package."""
    core = package_dir("edgestill")
    return ([(f, f"edgestill/{f.name}") for f in sorted(core.glob("*.py"))]
            + [(package_dir("edgestill.runtime"), "edgestill/runtime")])


def link_tree(files: list[tuple[Path, str]], root: Path) -> Path:
    """Symlinks at `root/<path>` to each local path; returns `root` (for PYTHONPATH)."""
    for local, name in files:
        link = root / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(Path(local).resolve(), target_is_directory=Path(local).is_dir())
    return root
