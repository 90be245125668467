"""Real bundles for the benchmark tests, exported once per session from tiny random Llamas.

`tiny_build` is a `build/tiny/` folder as the earlier stages leave it: `bundle-fp32/` and
`bundle-int8/` of the 2-layer student (copies of the bundles tests/export builds), `teacher-bundle-fp32/` of a 3-layer "teacher", and
`data/teacher.jsonl` with hand-made train/eval records. Tests that write into it copy it first.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import make_tiny_llama
from tests.export.tiny_bundles import tiny_bundle

INSTRUCTION = "Summarize the following paragraph in one sentence."
EVAL_INPUTS = [
    "The library will close early on Friday because of a staff meeting, and it opens again on Monday.",
    "Heavy rain is expected over the weekend, so the outdoor market has been moved into the town hall.",
    "The new bus line connects the station with the hospital every twenty minutes from six in the morning.",
]


def teacher_records() -> list[dict]:
    """Two train and three eval records; eval ones carry a label."""
    train = [{"id": i, "split": "train", "input": f"Train paragraph {i}.", "output": "Train answer."}
             for i in range(2)]
    evals = [{"id": 2 + i, "split": "eval", "input": text, "output": text.split(",")[0] + ".",
              "label": text.split(" ")[1] + " news."} for i, text in enumerate(EVAL_INPUTS)]
    return [{**r, "prompt": "", "teacher": "tiny-teacher"} for r in train + evals]


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory, tiny_llama_dir, teacher_dir) -> Path:
    """build/tiny/ with two student bundles, a teacher bundle and data/teacher.jsonl."""
    from edgestill.export import ExportSettings, export_bundle

    root = tmp_path_factory.mktemp("bench-build")
    build = root / "tiny"
    teacher_hf = make_tiny_llama(root / "teacher-hf", teacher_dir, num_layers=3, seed=1)
    for precision in ("fp32", "int8"):  # the student bundles tests/export and tests/runtime use too
        shutil.copytree(tiny_bundle(tmp_path_factory, tiny_llama_dir, precision), build / f"bundle-{precision}")
    export_bundle(teacher_hf, build / "teacher-bundle-fp32", "fp32",
                  ExportSettings(INSTRUCTION, tuple(EVAL_INPUTS[:1]), role="teacher", name="teacher-fp32"))
    (build / "data").mkdir()
    (build / "data" / "teacher.jsonl").write_text("".join(json.dumps(r) + "\n" for r in teacher_records()))
    return build


@pytest.fixture
def build_copy(tiny_build, tmp_path) -> Path:
    """A private copy of `tiny_build` (as `<tmp>/tiny`) that a test may write a report into."""
    return Path(shutil.copytree(tiny_build, tmp_path / "tiny"))


def write_recipe(folder: Path, name: str = "tiny", **bench) -> Path:
    """A minimal recipe named `name` with small benchmark settings (override with `bench`)."""
    settings = {"threads": 1, "prompt_tokens": 16, "gen_tokens": 4, "repetitions": 2, "quality_examples": 2,
                "engines": ["edgestill-runtime"], **bench}
    recipe = {"name": name,
              "task": {"instruction": INSTRUCTION, "max_output_tokens": 6,
                       "seed_examples": [{"input": EVAL_INPUTS[0], "output": "The library closes early."}]},
              "bench": settings}
    path = folder / f"{name}.yaml"
    path.write_text(json.dumps(recipe))  # JSON is YAML
    return path
