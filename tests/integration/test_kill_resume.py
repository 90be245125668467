"""`edgestill distill` killed with SIGKILL mid-answers and mid-training resumes without loss.

Runs the real CLI in a subprocess on a tiny recipe, kills it (kill -9) once the teacher has
answered a few inputs, again once a training checkpoint exists, then lets it finish. The data
must equal an uninterrupted run's (no duplicates, no gaps) and training must report that it
resumed from the checkpoint.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import make_tiny_llama, write_tiny_recipe

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
TEXTS = [f"Note {i}: the warehouse in town {i} received {i * 11} boxes of apples and sent {i * 5} to shops."
         for i in range(48)]


def run_until(cmd: list[str], ready, timeout: float = 300) -> bool:
    """Start `cmd`; SIGKILL it as soon as `ready()` holds. Returns False if it ended first."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    return False


def lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_kill_9_during_answers_and_training_then_resume(tmp_path, teacher_dir):
    teacher = make_tiny_llama(tmp_path / "teacher", teacher_dir, num_layers=2, seed=5)
    recipe = write_tiny_recipe(
        tmp_path, "k", teacher, TEXTS,
        task={"n_train": 44, "n_eval": 4, "max_output_tokens": 12}, teacher={"batch_size": 2},
        student={"layers": [0]},
        distill={"steps": 400, "batch_size": 4, "warmup_steps": 1, "checkpoint_every": 20, "loss": {"top_k": 8}})
    cmd = [sys.executable, "-m", "edgestill.distill", str(recipe)]
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    out = killed / "k"
    assert run_until(cmd + ["--build-root", str(killed)], lambda: lines(out / "data/teacher.jsonl") >= 6)
    assert lines(out / "data/teacher.jsonl") < 48  # really killed mid-answers
    assert run_until(cmd + ["--build-root", str(killed)],
                     lambda: (out / "student/checkpoint/state.json").is_file())
    done = subprocess.run(cmd + ["--build-root", str(killed)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    ref = subprocess.run(cmd + ["--build-root", str(clean)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]

    def records(root):
        return [json.loads(x) for x in (root / "k/data/teacher.jsonl").read_text().splitlines()]

    got, want = records(killed), records(clean)
    assert [r["id"] for r in got] == list(range(48))
    assert [(r["input"], r["output"], r["target_ids"]) for r in got] == \
        [(r["input"], r["output"], r["target_ids"]) for r in want]
    for name in ("topk_ids.u16", "topk_logp.f16"):
        assert (killed / "k/data" / name).read_bytes() == (clean / "k/data" / name).read_bytes()
    report = json.loads((out / "student/distill_report.json").read_text())
    assert report["train"]["resumed_from"] >= 20
    assert report["train"]["history"][-1]["step"] == 400
    assert not (out / "student/checkpoint").exists()
