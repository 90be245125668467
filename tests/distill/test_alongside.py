"""The SFT baseline trained alongside the student (distill/alongside.py): same results, no orphans."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from edgestill.distill.alongside import Alongside
from tests.distill.test_multiprocess import small_recipe


def _distill(recipe: Path, root: Path, cores: set[int]) -> dict:
    done = subprocess.run([sys.executable, "-m", "edgestill.distill", str(recipe), "--build-root", str(root)],
                          capture_output=True, text=True, timeout=900,
                          preexec_fn=lambda: os.sched_setaffinity(0, cores))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((root / "al" / "student" / "distill_report.json").read_text())


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores")
@pytest.mark.skipif(torch.cuda.is_available(), reason="alongside training is off where torch sees a CUDA GPU")
def test_baseline_alongside_trains_what_one_after_the_other_trains(tmp_path, tiny_llama_dir):
    recipe = small_recipe(tmp_path, "al", tiny_llama_dir, batch_size=4, baselines=["sft"])
    both = sorted(os.sched_getaffinity(0))[:2]
    side = _distill(recipe, tmp_path / "side", set(both))  # 2 cores: the baseline trains in a child
    shutil.copytree(tmp_path / "side" / "al" / "data", tmp_path / "one" / "al" / "data")  # same teacher data
    one = _distill(recipe, tmp_path / "one", {both[0]})  # 1 core: one after the other
    assert side["baselines"]["sft"]["train"]["alongside"] and not one["baselines"]["sft"]["train"]["alongside"]
    for report in (side, one):
        sft = report["baselines"]["sft"]["train"]
        assert sft["resumed_from"] == 0 and sft["steps"] == 6 and sft["seconds"] > 0
    assert (side["baselines"]["sft"]["train"]["last_loss"]["loss"]
            == pytest.approx(one["baselines"]["sft"]["train"]["last_loss"]["loss"], rel=1e-4))
    assert side["baselines"]["sft"]["quality"] == one["baselines"]["sft"]["quality"]
    assert side["train"]["last_loss"]["loss"] == pytest.approx(one["train"]["last_loss"]["loss"], rel=1e-4)
    a = load_file(tmp_path / "side" / "al" / "student" / "model.safetensors")
    b = load_file(tmp_path / "one" / "al" / "student" / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    leftovers = {p.name for p in (tmp_path / "side" / "al" / "student").iterdir()}
    assert not leftovers & {"checkpoint", "checkpoint-sft", "sft-summary.json"}


def test_a_failing_child_is_an_error(tmp_path):
    side = Alongside(lambda: 1 / 0, tmp_path / "summary.json")
    with pytest.raises(RuntimeError, match="SFT baseline"):
        side.join()
    assert Alongside(lambda: {"steps": 3}, tmp_path / "summary.json").join() == {"steps": 3}


def test_the_child_dies_with_its_parent(tmp_path):
    script = (f"import os, sys, time; sys.path.insert(0, {str(Path.cwd())!r})\n"
              "from distill.alongside import Alongside\n"
              f"a = Alongside(lambda: time.sleep(120) or {{}}, {str(tmp_path / 's.json')!r})\n"
              "time.sleep(1); print(a.process.pid, flush=True)\n"
              "os.kill(os.getpid(), 9)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGKILL
    child = int(done.stdout.split()[0])
    deadline = time.time() + 10
    while time.time() < deadline and _alive(child):
        time.sleep(0.1)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")
