"""The recipe's `bench:` section (grids, targets, engines) and the hygiene helpers of `benchmarks.measure`."""

from __future__ import annotations

import os

import pytest

from edgestill.benchmarks.measure import noise_reasons
from edgestill.benchmarks.plan import Point, points
from edgestill.errors import UserError
from edgestill.recipe import load_recipe
from tests.benchmarks.conftest import write_recipe


def test_every_grid_setting_may_be_a_list(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path), ["bench.threads=[1,2]", "bench.prompt_tokens=[16,64]",
                                                  "bench.gen_tokens=8"])
    assert points(recipe.bench) == [Point(1, 16, 8), Point(1, 64, 8), Point(2, 16, 8), Point(2, 64, 8)]


@pytest.mark.parametrize("override, words", [
    ("bench.targets=[ftp://board]", ["bench.targets", "ssh://[user@]host[:port]"]),
    ("bench.targets=[ssh://pi@board/path]", ["bench.targets", "'ssh://pi@board/path'"]),
    ("bench.targets=[]", ["bench.targets", "at least one"]),
    ("bench.threads=[2, 0]", ["bench.threads", ">= 1"]),
    ("bench.prompt_tokens=[]", ["bench.prompt_tokens"]),
    ("bench.engines=[vllm]", ["bench.engines", "'vllm'", "onnxruntime-genai"]),
    ("bench.warmup=-1", ["bench.warmup"]),
])
def test_bad_bench_settings_name_the_key(tmp_path, override, words):
    with pytest.raises(UserError) as err:
        load_recipe(write_recipe(tmp_path), [override])
    assert all(w in str(err.value) for w in words), str(err.value)


def test_targets_accept_local_ssh_and_adb(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path), ['bench.targets=[local, "ssh://pi@10.0.0.9:2222", "adb://", '
                                                  '"adb://R5CT1234567"]'])
    assert len(recipe.bench.targets) == 4


def test_noise_flags_spread_and_other_processes():
    quiet = {"decode_tok_s_min": 98.0, "decode_tok_s_max": 102.0, "decode_tok_s_p50": 100.0, "others_cpu_pct": 2.0}
    assert noise_reasons(quiet) == []
    loud = quiet | {"decode_tok_s_min": 60.0, "others_cpu_pct": 55.0}
    reasons = noise_reasons(loud)
    assert len(reasons) == 2 and "spread 42%" in reasons[0] and "55%" in reasons[1]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this OS")
def test_pinning_restricts_this_process(tmp_path):
    import subprocess
    import sys

    code = "from benchmarks.measure import pin_cpus; import os; c = pin_cpus(1); print(c, sorted(os.sched_getaffinity(0)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("] [")
    assert out[0].strip("[]\n") == out[1].strip("[]\n") and len(out[0].strip("[]\n").split(",")) == 1
