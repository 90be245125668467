"""Soft targets from a live server: llama-cpp-python's OpenAI-compatible server with the bundled GGUF.

The server runs `SmolLM2-135M-Instruct.Q4_1.gguf` (the file the bundled teacher is converted
from) on 127.0.0.1 and returns `logprobs` / `top_logprobs`. Its top-k rows must map onto the
teacher's tokenizer and agree with the local teacher (the same weights, dequantized by
transformers) run teacher-forced on the same prompt and answer.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from edgestill.distill.data import teacher_data
from edgestill.distill.topk import TopkStore
from edgestill.recipe import load_recipe
from tests.conftest import write_tiny_recipe
from tests.distill.test_server_teacher import TEXTS, free_port, stop, wait_healthy

pytest.importorskip("llama_cpp", reason="llama-cpp-python is installed by the test extra (see pyproject.toml)")


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    """`python -m llama_cpp.server` on the bundled GGUF; yields its base URL."""
    from edgestill.distill.teacher import bundled_gguf

    port = free_port()
    log_path = tmp_path_factory.mktemp("llama") / "server.log"
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(bundled_gguf("smollm2-135m-instruct")),
           "--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "1024",
           "--n_threads", "1", "--logits_all", "true", "--verbose", "false"]
    proc = subprocess.Popen(cmd, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, env={**os.environ})
    yield wait_healthy(proc, f"http://127.0.0.1:{port}", "/v1/models", log_path, "llama_cpp.server")
    stop(proc)


@pytest.mark.slow
def test_soft_targets_from_llama_cpp_agree_with_the_local_teacher(llama_server, tmp_path, teacher_dir):
    import torch
    from transformers import AutoModelForCausalLM

    teacher = {"source": "openai", "base_url": llama_server, "model": "smollm2", "tokenizer": "smollm2-135m-instruct",
               "batch_size": 2, "timeout_s": 60, "retries": 1}
    path = write_tiny_recipe(tmp_path, "llama", "openai", TEXTS[:4], teacher=teacher,
                             task={"n_train": 2, "n_eval": 1, "max_output_tokens": 12},
                             distill={"loss": {"alpha": 0.5, "top_k": 8}})
    data = teacher_data(load_recipe(path), tmp_path / "data")
    assert data.info["targets"] == "topk" and data.info["failed_requests"] == 0
    store = TopkStore(tmp_path / "data", 8, len(data.tokenizer))
    local = AutoModelForCausalLM.from_pretrained(teacher_dir).eval()
    same = close = total = 0
    for r in data.records:
        ids, logp = store.read(r["topk_offset"], r["topk_len"])
        targets = np.asarray(r["target_ids"])
        assert ids.shape == (len(targets), 8) and (np.diff(logp, axis=1) <= 1e-3).all()  # sorted rows
        assert (ids[:, 0] == targets).mean() >= 0.9  # greedy answer = the server's own top-1
        prompt = data.tokenizer(r["prompt"], add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            local_logp = torch.log_softmax(local(torch.tensor([prompt + targets.tolist()])).logits[0], -1)
        local_logp = local_logp[len(prompt) - 1:-1].numpy()
        same += int((local_logp.argmax(-1) == targets).sum())
        rows = np.arange(len(targets))
        close += int((np.abs(local_logp[rows, ids[:, 0]] - logp[:, 0]) < 0.5).sum())
        total += len(targets)
    # the same Q4_1 weights: llama.cpp (int8 activations) and transformers (fp32) mostly agree
    assert total > 0 and same / total >= 0.9 and close / total >= 0.8, (same, close, total)
