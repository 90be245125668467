"""Contract: the import rules of docs/contracts.md, read from the source with `ast` (every import,
those inside functions too, so a lazy import cannot hide a cycle or a forbidden edge)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {"edgestill": "edgestill", "distill": "edgestill.distill", "export": "edgestill.export",
           "runtime": "edgestill.runtime", "benchmarks": "edgestill.benchmarks"}
STAGES = ("edgestill.distill", "edgestill.export", "edgestill.runtime", "edgestill.benchmarks")
# what the runtime may import from edgestill core (stdlib-only modules)
RUNTIME_CORE = {"edgestill", "edgestill.errors", "edgestill.files", "edgestill.spans"}
RUNTIME_THIRD_PARTY = {"numpy", "onnxruntime", "tokenizers", "jinja2"}


def module_name(path: Path) -> str:
    folder = FOLDERS[path.relative_to(ROOT).parts[0]]
    stem = path.stem
    return folder if stem == "__init__" else f"{folder}.{stem}"


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports (absolute names; `from a import b` gives `a.b` when that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def graph() -> dict[str, set[str]]:
    files = [p for folder in FOLDERS for p in (ROOT / folder).glob("*.py")]
    names = {module_name(p): p for p in files}
    return {name: {m for m in imports_of(p) if m in names and m != name} for name, p in names.items()}


def stage_of(module: str) -> str:
    return next((s for s in STAGES if module == s or module.startswith(s + ".")), "edgestill")


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


EDGES = graph()


def test_the_graph_sees_the_tree():
    assert len(EDGES) > 60 and "edgestill.export.bundle" in EDGES["edgestill.export.__main__"]
    assert "edgestill.export.gptq" in EDGES["edgestill.export.calibrated"]  # an edge we know is there


def test_no_import_cycles():
    assert cycles(EDGES) == []


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("module", sorted(m for m in EDGES if stage_of(m) == "edgestill.runtime"))
def test_runtime_imports_only_itself_and_stdlib_core(module):
    path = next(p for p in (ROOT / "runtime").glob("*.py") if module_name(p) == module)
    ours = {m if m in EDGES else m.rsplit(".", 1)[0] for m in imports_of(path) if m.split(".")[0] == "edgestill"}
    bad = {m for m in ours if stage_of(m) != "edgestill.runtime" and m not in RUNTIME_CORE}
    assert not bad, f"{module} imports {sorted(bad)}"
    third = {m.split(".")[0] for m in imports_of(path)} - {"edgestill", "__future__"}
    assert third <= RUNTIME_THIRD_PARTY | set(sys.stdlib_module_names), sorted(third)


def test_nothing_outside_benchmarks_imports_benchmarks():
    bad = {(m, d) for m, deps in EDGES.items() for d in deps
           if stage_of(d) == "edgestill.benchmarks" and stage_of(m) != "edgestill.benchmarks"}
    assert not bad


def test_export_does_not_import_distill():
    bad = {(m, d) for m, deps in EDGES.items() for d in deps
           if stage_of(m) == "edgestill.export" and stage_of(d) == "edgestill.distill"}
    assert not bad


def test_core_imports_no_stage():
    bad = {(m, d) for m, deps in EDGES.items() for d in deps if stage_of(m) == "edgestill" and stage_of(d) != "edgestill"}
    assert not bad


def test_export_transforms_do_not_import_each_other():
    """The middle layer: one checkpoint -> checkpoint pass per file, none importing a sibling or the top."""
    transforms = {f"edgestill.export.{n}" for n in ("smooth", "gptq", "qat")}
    top = {f"edgestill.export.{n}" for n in ("calibrated", "build", "mixed", "bundle", "passes", "__main__")}
    bad = {(m, d) for m in transforms for d in EDGES[m] if d in transforms | top}
    assert not bad
