"""`edgestill sweep` on a tiny recipe: sizes the teacher cannot give stop before any work, two sizes
train on the same teacher data through distill -> export -> bench, the chart is written, and a
sweep stopped half way resumes with the finished size skipped."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgestill.distill.sweep import main
from edgestill.errors import UserError
from tests.conftest import make_tiny_llama, write_tiny_recipe

pytestmark = pytest.mark.slow

TEXTS = [f"On day {i} the harbour office sold {i * 4} ferry tickets, and the storm warning was lifted at noon."
         for i in range(12)]


def tiny_recipe(root: Path, teacher: Path, sweep: list[dict]) -> Path:
    return write_tiny_recipe(
        root, "tiny", teacher, TEXTS,
        task={"instruction": "Summarize the following paragraph in one sentence.", "n_train": 8, "n_eval": 4,
              "max_output_tokens": 8},
        teacher={"batch_size": 4}, student={"layers": [1], "trim_vocab": True, "intermediate_size": 64},
        distill={"steps": 3, "batch_size": 4, "warmup_steps": 1, "loss": {"top_k": 8}, "baselines": []},
        export={"precisions": ["int8"]}, bench={"prompt_tokens": 16, "gen_tokens": 4, "repetitions": 1,
                                                "engines": ["edgestill-runtime"]},
        sweep=sweep)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, teacher_dir):
    return make_tiny_llama(tmp_path_factory.mktemp("sweep-teacher") / "teacher", teacher_dir, num_layers=2, seed=1)


@pytest.mark.parametrize("point, words", [
    ({"layers": 3}, "sweep[0] (size0): layers 3: the teacher has 2 layers"),
    ({"layers": [0, 2]}, "layers [0, 2]: give distinct teacher layers 0 to 1"),
    ({"intermediate_size": 4096}, "intermediate_size 4096: the teacher's is 128"),
    ({"num_attention_heads": 3}, "hidden_size 64 / 3 attention heads"),
])
def test_sizes_the_teacher_cannot_give_stop_before_any_work(tmp_path, teacher, point, words):
    recipe = tiny_recipe(tmp_path, teacher, [point])
    with pytest.raises(UserError, match=words.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(").replace(")", r"\)")):
        main([str(recipe), "--build-root", str(tmp_path / "build")])
    assert not (tmp_path / "build").exists()


def test_sizes_are_checked_against_the_student_base_when_there_is_one(tmp_path, teacher, teacher_dir):
    from edgestill.distill.sweep import check_point, teacher_config
    from edgestill.recipe import SweepPoint, load_recipe

    base = make_tiny_llama(tmp_path / "base", teacher_dir, num_layers=3, seed=2)
    recipe = load_recipe(tiny_recipe(tmp_path, teacher, [{"layers": 3}]), [f"student.base={base}"])
    config = teacher_config(recipe)
    assert config["num_hidden_layers"] == 3
    check_point(SweepPoint(layers=3), 0, config, recipe)  # the teacher has 2, the base 3
    with pytest.raises(UserError, match=r"layers 4: the student base has 3 layers"):
        check_point(SweepPoint(layers=4), 0, config, recipe)


def test_two_sizes_on_the_same_data_then_resume(tmp_path, teacher):
    recipe = tiny_recipe(tmp_path, teacher, [{"name": "one", "layers": [1]}, {"name": "two", "layers": [0, 1]}])
    build = tmp_path / "build"
    cmd = [sys.executable, "-m", "edgestill.distill.sweep", str(recipe), "--build-root", str(build)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    one, two = build / "tiny-one", build / "tiny-two"
    assert (one / "data" / "teacher.jsonl").read_bytes() == (two / "data" / "teacher.jsonl").read_bytes()
    teacher_onnx = [p.name for p in (one / "teacher-bundle-fp32").glob("*.onnx")]
    assert teacher_onnx and all((two / "teacher-bundle-fp32" / n).samefile(one / "teacher-bundle-fp32" / n)
                                for n in teacher_onnx)  # built once, shared (export found it up to date)
    params = [json.loads((b / "student" / "distill_report.json").read_text())["student"]["params"] for b in (one, two)]
    assert params[0] < params[1]
    s = json.loads((build / "tiny-sweep" / "sweep.json").read_text())
    assert [p["name"] for p in s["points"]] == ["one", "two"] and (build / "tiny-sweep" / "sweep.png").is_file()
    (two / "report" / "report.json").unlink()  # as if the sweep was stopped before the second size's benchmark
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "tiny-one is finished, skipped" in again.stderr and "tiny-two is finished" not in again.stderr
    assert (two / "report" / "report.json").is_file()
