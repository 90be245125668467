"""The real bundled teacher (SmolLM2-135M-Instruct) through the distill stage, on a tiny budget.

Checks what tiny random models cannot: the teacher writes usable inputs from the seeds
(few-shot), answers them, and a student cut from its layers trains and is scored.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_distill_with_the_real_teacher(tmp_path):
    args = ["name=real-tiny", "task.n_train=3", "task.n_eval=2", "task.max_output_tokens=24",
            "teacher.batch_size=6", "student.layers=[0,29]", "distill.steps=2", "distill.batch_size=2",
            "distill.warmup_steps=1"]
    proc = subprocess.run([sys.executable, "-m", "edgestill.distill", str(ROOT / "recipes/default.yaml"), *args,
                           "--build-root", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "real-tiny"
    inputs = [json.loads(line) for line in (out / "data/inputs.jsonl").read_text().splitlines()]
    assert [r["split"] for r in inputs].count("eval") == 2 and len(inputs) == 5
    assert all(len(r["input"].split()) >= 12 and r["source"] == "teacher" for r in inputs)
    answers = [json.loads(line) for line in (out / "data/teacher.jsonl").read_text().splitlines()]
    assert all(a["output"].strip() for a in answers)
    report = json.loads((out / "student/distill_report.json").read_text())
    assert report["student"]["params"] < report["teacher"]["params"]
    assert report["train"]["steps"] == 2 and 0 <= report["quality"]["rouge_l_vs_teacher"] <= 1
