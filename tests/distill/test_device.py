"""The recipe's `device`: a clear error where it cannot be had; on a CUDA GPU the teacher, the
training and the evaluation run there and compute what they compute on the CPU.

The GPU tests are skipped on machines without CUDA (CI); they ran on a lent H100 (distill/README.md).
"""

import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from edgestill.distill.device import native_bf16, torch_device, train_precision
from edgestill.errors import UserError
from edgestill.recipe import load_recipe
from tests.conftest import write_tiny_recipe
from tests.distill.test_multiprocess import TEXTS

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on a GPU machine)")


def test_recipe_refuses_an_unknown_device(tmp_path, tiny_llama_dir):
    path = write_tiny_recipe(tmp_path, "dev", tiny_llama_dir, TEXTS, device="gpu0")
    with pytest.raises(UserError, match=r"device: expected auto, cpu, cuda or cuda:N.*'gpu0'"):
        load_recipe(path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_a_gpu_asked_without_one_is_a_clear_error():
    with pytest.raises(UserError, match="sees no CUDA GPU; set device=cpu"):
        torch_device("cuda")
    assert torch_device("auto").type == "cpu"


@cuda
def test_a_gpu_beyond_the_last_is_a_clear_error():
    with pytest.raises(UserError, match="CUDA GPU"):
        torch_device(f"cuda:{torch.cuda.device_count()}")
    assert torch_device("auto") == torch_device("cuda") == torch.device("cuda", 0)


@cuda
def test_teacher_top_k_on_the_gpu_matches_the_cpu(tiny_llama_dir):
    from transformers import AutoTokenizer

    from edgestill.distill.generate import greedy_topk
    from edgestill.distill.teacher import load_teacher

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    prompts = [f"Summarize: {t}" for t in TEXTS[:6]]
    stop = {tok.eos_token_id}
    runs = {}
    for device in ("cpu", "cuda"):
        model, _ = load_teacher(str(tiny_llama_dir), "fp32", torch.device(device))
        assert next(model.parameters()).device.type == device
        runs[device] = greedy_topk(model, tok, prompts, 8, 4, stop)
    for cpu, gpu in zip(runs["cpu"], runs["cuda"]):
        same = 0
        while same < min(len(cpu["tokens"]), len(gpu["tokens"])) and cpu["tokens"][same] == gpu["tokens"][same]:
            same += 1
        # identical up to float rounding while the tokens agree ...
        assert torch.allclose(torch.from_numpy(cpu["topk_logp"][:same + 1]),
                              torch.from_numpy(gpu["topk_logp"][:same + 1]), atol=1e-4)
        if same < len(cpu["tokens"]):  # ... and a split only where the CPU's top two tie
            first, second = cpu["topk_logp"][same][:2]
            assert first - second < 1e-3


@cuda
def test_a_distill_run_on_the_gpu_trains_the_cpu_student(tmp_path, tiny_llama_dir):
    """The same teacher data, trained and evaluated with device=cpu and device=cuda: the same
    losses step by step and the same weights, within float rounding; the GPU did the work."""
    from edgestill.distill.__main__ import run

    reports, weights = {}, {}
    for device in ("cpu", "cuda"):
        root = tmp_path / device
        recipe = load_recipe(write_tiny_recipe(
            tmp_path, f"dev-{device}", tiny_llama_dir, TEXTS, device=device,
            task={"n_train": 12, "n_eval": 4, "max_output_tokens": 6}, teacher={"batch_size": 4},
            student={"layers": [0, 1]},
            distill={"steps": 6, "batch_size": 8, "lr": 1.0e-3, "warmup_steps": 1, "checkpoint_every": 3,
                     "baselines": ["sft", "init"], "loss": {"top_k": 8}}))
        recipe.name = "dev"
        if device == "cuda":  # the CPU run's teacher data, so both train on the same records
            shutil.copytree(tmp_path / "cpu" / "dev" / "data", root / "dev" / "data")
            torch.cuda.reset_peak_memory_stats()
        reports[device] = run(recipe, str(root))
        weights[device] = load_file(root / "dev" / "student" / "model.safetensors")
    assert torch.cuda.max_memory_allocated() > 0
    cpu, gpu = reports["cpu"], reports["cuda"]
    assert gpu["baselines"]["sft"]["train"]["alongside"] is False
    assert [h["loss"] for h in gpu["train"]["history"]] == pytest.approx(
        [h["loss"] for h in cpu["train"]["history"]], rel=1e-4)
    for name, value in weights["cpu"].items():
        assert torch.allclose(value, weights["cuda"][name], atol=1e-4), name
    assert gpu["quality"]["n_eval"] == 4


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="reads the CPU flags from /proc/cpuinfo (Linux)")
def test_auto_precision_is_bf16_where_the_cpu_flags_say_native_bf16():
    flags = set(re.findall(r"[a-z0-9_]+", Path("/proc/cpuinfo").read_text()))
    native = bool(flags & {"avx512_bf16", "amx_bf16"})
    cpu = torch.device("cpu")
    assert native_bf16(cpu) == native
    assert train_precision("auto", cpu) == ("bf16" if native else "fp32")
    assert train_precision("fp32", cpu) == "fp32" and train_precision("bf16", cpu) == "bf16"
