"""The whole pipeline through `make student` on a tiny recipe: distill -> export -> benchmarks.

The teacher is a random 2-layer, hidden-64 Llama with the real tokenizer, the inputs come from
a file (a random teacher cannot write sensible ones), the student keeps one of its layers.
A second `make student` must skip every finished stage.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_tiny_llama, write_tiny_recipe

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TEXTS = [f"On day {i} the village library lent {i * 3} books, and the reading club met to talk about story {i}."
         for i in range(12)]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, teacher_dir):
    root = tmp_path_factory.mktemp("make-student")
    teacher = make_tiny_llama(root / "teacher", teacher_dir, num_layers=2, seed=1)
    recipe = write_tiny_recipe(
        root, "tiny", teacher, TEXTS,
        task={"instruction": "Summarize the following paragraph in one sentence.", "n_train": 8, "n_eval": 4,
              "max_output_tokens": 8},
        teacher={"batch_size": 4}, student={"layers": [1], "trim_vocab": True, "intermediate_size": 64},
        distill={"steps": 4, "batch_size": 4, "warmup_steps": 1, "checkpoint_every": 2, "loss": {"top_k": 8}},
        export={"precisions": ["fp32", "int8"]},
        bench={"prompt_tokens": 16, "gen_tokens": 8, "repetitions": 2})
    build = root / "build"
    cmd = ["make", "student", f"RECIPE={recipe}", f"BUILD={build}"]
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    return build / "tiny", first, second


def test_stage_folders_exist(tiny_run):
    out, _, _ = tiny_run
    for rel in ["data/inputs.jsonl", "data/teacher.jsonl", "student/config.json", "student/model.safetensors",
                "student/distill_report.json", "bundle-fp32/manifest.json", "bundle-int8/manifest.json",
                "teacher-bundle-fp32/manifest.json", "report/report.json", "report/report.md"]:
        assert (out / rel).is_file(), rel


def test_report_compares_teacher_and_students(tiny_run):
    out, _, _ = tiny_run
    report = json.loads((out / "report/report.json").read_text())
    models = {m["name"]: m for m in report["models"]}
    roles = sorted(m["role"] for m in report["models"])
    assert roles == ["student", "student", "teacher"]
    teacher = next(m for m in report["models"] if m["role"] == "teacher")
    for m in report["models"]:
        for key in ("params", "file_bytes", "peak_rss_mb", "load_s", "ttft_ms_p50", "decode_tok_s_p50"):
            assert isinstance(m[key], (int, float)) and m[key] > 0, (m["name"], key)
        if m["role"] == "teacher":  # no labels: the teacher is not re-scored against its own answers
            assert "rouge_l_vs_teacher" not in m["quality"] and "perplexity_teacher_text" in m["quality"]
        else:
            assert 0.0 <= m["quality"]["rouge_l_vs_teacher"] <= 1.0
        if m["role"] == "student":
            assert m["params"] < teacher["params"]
    int8 = next(m for m in report["models"] if m["precision"] == "int8")
    fp32 = next(m for m in report["models"] if m["precision"] == "fp32" and m["role"] == "student")
    assert int8["file_bytes"] < fp32["file_bytes"]
    md = (out / "report/report.md").read_text()
    assert all(name in md for name in models)
    echo = json.loads((out / "student/distill_report.json").read_text())["baselines"]["echo_input"]["quality"]
    assert f"the input itself as the answer (no model) {echo['rouge_l_vs_teacher']:.3f}" in md
    gain = json.loads((out / "student/distill_report.json").read_text())["comparisons"]["sft"]["rouge_l_vs_teacher"]
    assert f"minus the same student trained on hard targets only {gain['gain']:+.3f}" in md
    quantized = report["gains_over_fp32_student"][int8["name"]]
    assert quantized["ci95"][0] <= quantized["gain"] <= quantized["ci95"][1]
    assert f"{int8['name']} {quantized['gain']:+.3f}" in md


def test_student_is_trimmed_and_pruned_and_beside_its_baselines(tiny_run):
    out, _, _ = tiny_run
    report = json.loads((out / "student/distill_report.json").read_text())
    config = json.loads((out / "student/config.json").read_text())
    assert config["vocab_size"] == report["student"]["vocab_size"] < report["student"]["teacher_vocab_size"]
    assert config["intermediate_size"] == 64
    for name in ("sft", "init", "echo_input", "teacher_noise"):
        assert 0.0 <= report["baselines"][name]["quality"]["rouge_l_vs_teacher"] <= 1.0
    assert [r["sigma"] for r in report["baselines"]["teacher_noise"]["runs"]] == [0.01]
    assert "token_agreement_vs_teacher" in report["quality"]


def test_report_gives_intervals_and_paired_gains_over_the_baselines(tiny_run):
    out, _, _ = tiny_run
    report = json.loads((out / "student/distill_report.json").read_text())
    q, per = report["quality"], report["per_example"]
    assert len(per["rouge_l_vs_teacher"]) == q["n_eval"] == len(per["answer_tokens"])
    assert sum(per["rouge_l_vs_teacher"]) / q["n_eval"] == pytest.approx(q["rouge_l_vs_teacher"], abs=1e-3)
    assert sum(per["agreeing_tokens"]) / sum(per["answer_tokens"]) == pytest.approx(q["token_agreement_vs_teacher"], abs=1e-4)
    for key in ("rouge_l_vs_teacher", "token_agreement_vs_teacher"):
        lo, hi = q[f"{key}_ci95"]
        assert lo <= q[key] <= hi
    assert set(report["comparisons"]) == {"sft", "init", "echo_input"}
    for name in ("sft", "init", "echo_input"):
        gain = report["comparisons"][name]["rouge_l_vs_teacher"]
        base = report["baselines"][name]["quality"]["rouge_l_vs_teacher"]
        assert gain["gain"] == pytest.approx(q["rouge_l_vs_teacher"] - base, abs=1e-3)
        assert gain["ci95"][0] <= gain["gain"] <= gain["ci95"][1]
    assert "token_agreement_vs_teacher" in report["comparisons"]["sft"]
    assert "token_agreement_vs_teacher" not in report["comparisons"]["echo_input"]
    assert len(report["data"]["eval_inputs_sha256"]) == 64
    assert isinstance(report["warnings"], list)
    path = str(out / "student/distill_report.json")  # a run against itself: zero gain, paired
    done = subprocess.run([sys.executable, "-m", "edgestill.distill.compare", path, path], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and "A - B +0.0000 (+0.0000 to +0.0000): A is not distinguishable from B" in done.stdout


def test_second_make_skips_finished_stages(tiny_run):
    _, first, second = tiny_run
    assert "edgestill distill" in first.stdout
    assert second.returncode == 0
    for stage in ("edgestill distill", "edgestill export", "edgestill bench"):
        assert stage not in second.stdout, second.stdout
