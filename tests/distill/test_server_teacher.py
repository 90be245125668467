"""The OpenAI-compatible server teacher against a real `transformers serve` on 127.0.0.1.

`transformers serve` (5.23) runs offline on a local folder but ignores `logprobs`, so it
exercises the sequence-level path; the log-prob mapping is checked on the real tokenizer with
llama.cpp-style token entries.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from edgestill.distill.answers import prepare_answers
from edgestill.distill.data import teacher_data
from edgestill.distill.server_teacher import (
    ServerClient,
    TokenMap,
    server_answerer,
    server_writer,
    topk_answer,
)
from edgestill.errors import UserError
from edgestill.files import read_jsonl
from edgestill.recipe import load_recipe
from tests.conftest import write_tiny_recipe

TEXTS = [f"Note {i}: the crew repaired pump {i} on day {i * 3} and logged the pressure readings." for i in range(8)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_dir: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    """`transformers serve` on a free port of 127.0.0.1; returns (process, base_url) once healthy."""
    port = free_port()
    exe = Path(sys.executable).parent / "transformers"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    log = open(log_path, "wb")
    proc = subprocess.Popen([str(exe), "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port),
                             "--device", "cpu", "--dtype", "float32"], stdout=log, stderr=subprocess.STDOUT, env=env)
    return proc, wait_healthy(proc, f"http://127.0.0.1:{port}", "/health", log_path, "transformers serve")


def wait_healthy(proc: subprocess.Popen, root: str, probe: str, log_path: Path, name: str) -> str:
    """Poll `root + probe` until it answers (then return root + "/v1"); raise if the server exits or
    stays silent for 120 s."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited: {log_path.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(root + probe, timeout=2).read()
            return root + "/v1"
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"{name} did not answer in 120 s")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_llama_dir):
    proc, url = start_server(tiny_llama_dir, tmp_path_factory.mktemp("serve") / "serve.log")
    yield url
    stop(proc)


def server_recipe(root: Path, base_url: str, model_dir: Path, **sections):
    teacher = {"base_url": base_url, "model": str(model_dir), "tokenizer": str(model_dir), "batch_size": 3,
               "timeout_s": 30, "retries": 1, **sections.pop("teacher", {})}
    task = {"n_train": 4, "n_eval": 2, "max_output_tokens": 6, **sections.pop("task", {})}
    distill = {"loss": {"alpha": 1.0, "top_k": 8}, **sections.pop("distill", {})}
    return load_recipe(write_tiny_recipe(root, "srv", "openai", TEXTS, task=task, teacher=teacher,
                                         distill=distill, **sections))


@pytest.mark.slow
def test_server_teacher_sequence_kd_end_to_end(server, tmp_path, tiny_llama_dir):
    recipe = server_recipe(tmp_path, server, tiny_llama_dir)
    data = teacher_data(recipe, tmp_path / "data")
    assert data.info["targets"] == "sequence" and data.info["failed_requests"] == 0
    assert data.model is not None and data.model.config.num_hidden_layers == 2  # the student copies it
    assert [r["id"] for r in data.records] == list(range(6))
    assert {r["split"] for r in data.records} == {"train", "eval"}
    for r in data.records:
        text_ids = r["target_ids"][:-1] if r["ended"] else r["target_ids"]
        assert data.tokenizer.decode(text_ids, skip_special_tokens=True).strip() == r["output"]
        assert r["teacher"] == f"openai:{tiny_llama_dir}"
    # resume: nothing is asked again, the records are the same
    again = teacher_data(recipe, tmp_path / "data")
    assert [r["output"] for r in again.records] == [r["output"] for r in data.records]


@pytest.mark.slow
def test_soft_targets_without_logprobs_are_refused(server, tmp_path, tiny_llama_dir):
    recipe = server_recipe(tmp_path, server, tiny_llama_dir, distill={"loss": {"alpha": 0.5, "top_k": 8}})
    with pytest.raises(UserError, match=r"alpha=1"):
        teacher_data(recipe, tmp_path / "data")


@pytest.mark.slow
def test_server_writer_samples_one_text_per_conversation(server, tiny_llama_dir):
    write = server_writer(ServerClient(server, str(tiny_llama_dir), retries=0), workers=2)
    texts = write([[{"role": "user", "content": "Write a sentence."}]] * 3, 5, seed=1)
    assert len(texts) == 3 and all(isinstance(t, str) and t for t in texts)


def test_unreachable_server_is_a_clear_user_error(tmp_path, tiny_llama_dir):
    url = f"http://127.0.0.1:{free_port()}/v1"  # nobody listens there
    recipe = server_recipe(tmp_path, url, tiny_llama_dir)
    with pytest.raises(UserError, match=r"teacher.base_url: cannot reach http://127\.0\.0\.1:\d+/v1"):
        teacher_data(recipe, tmp_path / "data")


def test_recipe_checks_server_fields(tmp_path, tiny_llama_dir):
    with pytest.raises(UserError, match="teacher.base_url"):
        server_recipe(tmp_path, "localhost:8000", tiny_llama_dir)
    with pytest.raises(UserError, match="teacher.tokenizer"):
        server_recipe(tmp_path, "http://127.0.0.1:1/v1", tiny_llama_dir, teacher={"tokenizer": str(tmp_path)})


@pytest.mark.slow
def test_server_killed_mid_run_keeps_finished_records(tmp_path, tiny_llama_dir):
    from transformers import AutoTokenizer

    proc, url = start_server(tiny_llama_dir, tmp_path / "serve.log")
    recipe = server_recipe(tmp_path, url, tiny_llama_dir, teacher={"retries": 1, "timeout_s": 5})
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    client = ServerClient(url, str(tiny_llama_dir), timeout_s=5, retries=1)
    real = server_answerer(client, tok, [tok.eos_token_id], top_logprobs=0, workers=3)
    calls = []

    def answer_then_kill(messages, max_new_tokens, k):
        out = real(messages, max_new_tokens, k)
        calls.append(len(messages))
        if len(calls) == 1:
            stop(proc)  # the server dies after the first batch of 3
        return out

    inputs = [{"id": i, "split": "train", "input": t} for i, t in enumerate(TEXTS[:6])]
    try:
        records = prepare_answers(recipe, tmp_path / "data", inputs, None, tok, "srv", answer=answer_then_kill)
    finally:
        stop(proc)
    assert [r["id"] for r in records] == [0, 1, 2]
    assert [r["id"] for r in read_jsonl(tmp_path / "data" / "teacher.jsonl")] == [0, 1, 2]
    assert client.failed_requests == 3 and client.failures["connection"] == 6  # 3 requests x 2 tries


def test_token_map_reads_pieces_and_bytes_of_the_real_tokenizer(tiny_llama_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    text = "Café crews fixed pump 42 — ok?"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    tmap = TokenMap(tok)
    as_bytes = [{"token": "?", "bytes": list(tok.decode([i]).encode())} for i in ids
                if "\ufffd" not in tok.decode([i])]
    pieces = [{"token": p} for p in tok.convert_ids_to_tokens(ids)]
    assert [tmap.id(e) for e in pieces] == ids
    assert [tmap.id(e) for e in as_bytes] == [i for i in ids if "\ufffd" not in tok.decode([i])]
    assert tmap.id({"token": "<|im_end|>"}) == tok.convert_tokens_to_ids("<|im_end|>")


def test_topk_answer_from_llama_cpp_style_logprobs(tiny_llama_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    ids = tok(" pump fixed", add_special_tokens=False)["input_ids"]
    content = [{"token": tok.decode([i]), "bytes": list(tok.decode([i]).encode()), "logprob": -0.1,
                "top_logprobs": [{"token": tok.decode([i]), "logprob": -0.1}, {"token": " the", "logprob": -2.5},
                                 {"token": "\u2603unknown", "logprob": -3.0}]} for i in ids]
    choice = {"message": {"content": " pump fixed"}, "finish_reason": "stop", "logprobs": {"content": content}}
    ans = topk_answer(choice, tok, TokenMap(tok), 4, [eos])
    assert ans["target_ids"] == ids + [eos] and ans["ended"] and ans["output"] == "pump fixed"
    assert ans["topk_ids"].shape == (len(ids) + 1, 4)
    assert ans["topk_ids"][0, 0] == ids[0] and ans["topk_ids"][0, 1] == tok.convert_tokens_to_ids("Ġthe")
    assert len(set(ans["topk_ids"][0].tolist())) == 4  # padding ids are distinct
    assert ans["topk_logp"][0, 2] < -1e4  # the unmappable alternative is padding (probability 0)
    bad = {**choice, "message": {"content": "something else"}}
    assert topk_answer(bad, tok, TokenMap(tok), 4, [eos]) is None  # pieces must spell the answer


def test_missing_api_key_variable_is_a_clear_user_error(tmp_path, tiny_llama_dir, monkeypatch):
    monkeypatch.delenv("EDGESTILL_TEST_NO_KEY", raising=False)
    recipe = server_recipe(tmp_path, f"http://127.0.0.1:{free_port()}/v1", tiny_llama_dir,
                           teacher={"api_key_env": "EDGESTILL_TEST_NO_KEY"})
    with pytest.raises(UserError, match="teacher.api_key_env: environment variable EDGESTILL_TEST_NO_KEY is not set"):
        teacher_data(recipe, tmp_path / "data")
