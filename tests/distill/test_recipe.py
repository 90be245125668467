"""Recipe loading: overrides, defaults, and one-line errors (exit 2, no traceback) for bad input."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgestill.errors import UserError
from edgestill.recipe import load_recipe

GOOD = textwrap.dedent("""\
    name: t
    task:
      instruction: "Summarize."
      seed_examples: [{input: "a b c", output: "a"}]
    """)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def test_defaults_and_overrides(tmp_path):
    recipe = load_recipe(write(tmp_path, GOOD), ["distill.steps=7", "export.precisions=[fp32]", "distill.lr=1e-3", "distill.loss.temperature=2"])
    assert recipe.distill.steps == 7
    assert recipe.export.precisions == ["fp32"]
    assert recipe.distill.lr == pytest.approx(1e-3)
    assert recipe.distill.loss.temperature == 2.0 and isinstance(recipe.distill.loss.temperature, float)
    assert recipe.teacher.source == "smollm2-135m-instruct"
    assert recipe.build_dir("b") == Path("b/t")
    assert load_recipe(write(tmp_path, GOOD), ["student.layers=8"]).student.layers == 8  # chosen at distill time


def test_relative_files_resolve_next_to_recipe(tmp_path):
    (tmp_path / "in.txt").write_text("x\n")
    recipe = load_recipe(write(tmp_path, GOOD + "  inputs: in.txt\n"))
    assert Path(recipe.task.inputs) == tmp_path / "in.txt"


BAD = {
    "unknown key": (GOOD + "distill: {stepz: 3}\n", ["unknown key 'distill.stepz'", "steps"]),
    "wrong type": (GOOD + "distill: {steps: many}\n", ["distill.steps", "integer", "'many'"]),
    "bad choice": (GOOD + "student: {init: magic}\n", ["student.init", "'teacher-layers'", "'random'"]),
    "missing file": (GOOD + "  inputs: nowhere.jsonl\n", ["task.inputs", "file not found"]),
    "bad teacher": (GOOD + "teacher: {source: /no/such/model}\n", ["teacher.source", "/no/such/model", ".gguf"]),
    "missing key": ("name: t\ntask: {instruction: x}\n", ["task.seed_examples", "missing"]),
    "bad precision": (GOOD + "export: {precisions: [fp64]}\n", ["export.precisions[0]", "'int8'"]),
    "bench range": (GOOD + "bench: {gen_tokens: 0}\n", ["bench.gen_tokens", ">= 1"]),
    "no layers": (GOOD + "student: {layers: 0}\n", ["student.layers", "number of layers >= 1"]),
    "layers text": (GOOD + "student: {layers: some}\n", ["student.layers", "a list of an integer or an integer"]),
    "not yaml": ("name: [unclosed\n", ["not valid YAML"]),
    "mixed budget": (GOOD + "export: {mixed_budget: 1.5}\n", ["export.mixed_budget", "(0, 1]", "1.5"]),
    "teacher noise": (GOOD + "distill: {teacher_noise: [0.01, 0]}\n", ["distill.teacher_noise", "(0, 1)", "[0.01, 0"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_recipe_raises_user_error(tmp_path, case):
    text, needles = BAD[case]
    path = write(tmp_path, text)
    with pytest.raises(UserError) as err:
        load_recipe(path)
    message = str(err.value)
    assert str(path) in message or "override" in message
    for needle in needles:
        assert needle in message


def test_a_bad_inputs_file_is_refused_when_the_recipe_loads(tmp_path):
    (tmp_path / "in.jsonl").write_bytes(b"\xff\xfe binary\n")
    with pytest.raises(UserError, match=r"task.inputs: .*in.jsonl: not UTF-8 text"):
        load_recipe(write(tmp_path, GOOD + "  inputs: in.jsonl\n"))
    (tmp_path / "labels.jsonl").write_text('{"input": "a", "output": "b"}\n{"input": "c", "output": 3}\n')
    with pytest.raises(UserError, match=r"task.eval_labels: .*labels.jsonl: record 2 has no 'output' text"):
        load_recipe(write(tmp_path, GOOD + "  eval_labels: labels.jsonl\n"))


@pytest.mark.parametrize("case", ["unknown key", "bad teacher", "missing file"])
def test_cli_prints_one_line_and_exits_2(tmp_path, case):
    path = write(tmp_path, BAD[case][0])
    for stage in ("distill", "export", "benchmarks"):
        proc = subprocess.run([sys.executable, "-m", stage, str(path)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, (stage, proc.stderr)
        assert "Traceback" not in proc.stderr
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), (stage, proc.stderr)
        assert str(path) in lines[0]


def test_bad_override_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="key=value"):
        load_recipe(write(tmp_path, GOOD), ["distill.steps"])
    with pytest.raises(UserError, match="distill.batch_size"):
        load_recipe(write(tmp_path, GOOD), ["distill.batch_size=true"])
