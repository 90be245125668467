"""`student.base`: a separately pretrained student, with the teacher's tokenizer (logit KD) or its own
(sequence-level KD on the teacher's text), end to end through export and the runtime; a served
teacher with no local weights; and the one-line refusals of a base that cannot work.

The teacher is a tiny Llama with the real tokenizer taught to answer one sentence (a random one
answers blank lines only); the bases are built here (tests/distill/base_models.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgestill.errors import UserError
from edgestill.recipe import load_recipe
from tests.conftest import write_tiny_recipe
from tests.distill.base_models import (
    foreign_tokenizer_base,
    same_tokenizer_base,
    taught_teacher,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
INSTRUCTION = "Summarize the following paragraph in one sentence."
ANSWER = "The library lent books."
TEXTS = [f"On day {i} the village library lent {i * 3} books, and the reading club met to talk about story {i}."
         for i in range(12)]
TASK = {"instruction": INSTRUCTION, "n_train": 8, "n_eval": 4, "max_output_tokens": 12}
SFT = {"kind": "sft", "alpha": 1.0, "top_k": 8}
LEARN = {"steps": 40, "lr": 0.005, "batch_size": 4, "warmup_steps": 2, "checkpoint_every": 20, "baselines": []}


@pytest.fixture(scope="module")
def models(tmp_path_factory, teacher_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bases")
    return {"teacher": taught_teacher(root / "teacher", teacher_dir, TEXTS, INSTRUCTION, ANSWER),
            "same": same_tokenizer_base(root / "same", teacher_dir),
            "foreign": foreign_tokenizer_base(root / "foreign")}


def base_recipe(root: Path, source, base, loss: dict, **sections) -> Path:
    return write_tiny_recipe(root, "based", source, TEXTS, task={**TASK, **sections.pop("task", {})},
                             teacher={"batch_size": 4, **sections.pop("teacher", {})},
                             student={"base": str(base), **sections.pop("student", {})},
                             distill={**LEARN, "loss": loss, **sections.pop("distill", {})},
                             export={"precisions": ["fp32", "int8"]}, **sections)


def distill_and_export(recipe_path: Path, build: Path) -> dict:
    from edgestill.distill.__main__ import run
    from edgestill.export.__main__ import main as export_main

    report = run(load_recipe(recipe_path), str(build))
    assert export_main([str(recipe_path), "--build-root", str(build)]) == 0
    return report


def test_same_tokenizer_base_learns_the_teachers_soft_targets(tmp_path, models):
    from edgestill.runtime import Bundle, Generator

    recipe = base_recipe(tmp_path, models["teacher"], models["same"], {"kind": "forward_kl", "alpha": 0.5, "top_k": 8})
    report = distill_and_export(recipe, tmp_path / "build")
    student = report["student"]
    assert student["init"] == "base" and student["base"] == str(models["same"])
    assert student["same_tokenizer_as_teacher"] and student["layers"] == [0, 1, 2]  # all the base's layers
    history = report["train"]["history"]
    assert history[0]["soft"] > 0 and history[-1]["soft"] < history[0]["soft"]  # top-k KL against the teacher
    gen = Generator(Bundle.open(tmp_path / "build" / "based" / "bundle-int8"), threads=2)
    assert gen.generate(TEXTS[9], max_new_tokens=8, temperature=0.0).strip() == ANSWER
    saved = json.loads((tmp_path / "build" / "based" / "student" / "config.json").read_text())
    assert saved["num_hidden_layers"] == 3  # the base's depth, not the teacher's 2


def test_foreign_tokenizer_base_learns_the_teachers_text(tmp_path, models):
    from transformers import AutoTokenizer

    from edgestill.runtime import Bundle, Generator

    recipe = base_recipe(tmp_path, models["teacher"], models["foreign"], SFT, student={"trim_vocab": True})
    report = distill_and_export(recipe, tmp_path / "build")
    assert report["student"]["base_architecture"] == "Qwen2ForCausalLM"
    assert not report["student"]["same_tokenizer_as_teacher"]
    assert report["student"]["chat_template"] == "the base's own"
    out = tmp_path / "build" / "based"
    student_tok = AutoTokenizer.from_pretrained(out / "student")
    base_tok = AutoTokenizer.from_pretrained(models["foreign"])
    assert set(student_tok.get_vocab()) <= set(base_tok.get_vocab())  # the base's pieces, trimmed
    bundle = Bundle.open(out / "bundle-int8")
    assert bundle.manifest["prompt"]["template"] == "<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    end = bundle.tokenizer.token_to_id("<|im_end|>")  # what the student learned to end its answers with
    assert bundle.eos_token_ids[0] == end
    assert json.loads((out / "student" / "generation_config.json").read_text())["eos_token_id"][0] == end
    gen = Generator(bundle, threads=2)
    assert gen.generate(TEXTS[10], max_new_tokens=32, temperature=0.0).strip() == ANSWER


def test_soft_targets_across_tokenizers_are_refused_before_any_work(tmp_path, models):
    recipe = base_recipe(tmp_path, models["teacher"], models["foreign"], {"kind": "forward_kl", "alpha": 0.5})
    done = subprocess.run([sys.executable, "-m", "edgestill.cli", "distill", str(recipe), "--build-root",
                           str(tmp_path / "build")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "distill.loss.kind=sft" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "build" / "based" / "data").exists()
    hidden = base_recipe(tmp_path, models["teacher"], models["foreign"], SFT,
                         distill={"loss": {**SFT, "hidden_states": 1.0, "hidden_map": "spread"}})
    from edgestill.distill.base import base_tokenizer_check

    with pytest.raises(UserError, match="hidden-state losses"):
        base_tokenizer_check(load_recipe(hidden))


def test_served_teacher_needs_no_local_weights_with_a_pretrained_student(tmp_path, models):
    from edgestill.runtime import Bundle, Generator
    from tests.distill.test_server_teacher import start_server, stop

    proc, url = start_server(models["teacher"], tmp_path / "serve.log")
    try:
        recipe = base_recipe(tmp_path, "openai", models["foreign"], SFT, task={"n_train": 8, "n_eval": 2},
                             teacher={"base_url": url, "model": str(models["teacher"]), "timeout_s": 60})
        assert load_recipe(recipe).teacher.tokenizer is None
        report = distill_and_export(recipe, tmp_path / "build")
    finally:
        stop(proc)
    assert report["teacher"]["targets"] == "sequence" and "params" not in report["teacher"]
    assert report["student"]["base"] == str(models["foreign"])
    records = [json.loads(line) for line in (tmp_path / "build" / "based" / "data" / "teacher.jsonl").open()]
    assert {r["output"] for r in records} == {ANSWER}
    gen = Generator(Bundle.open(tmp_path / "build" / "based" / "bundle-fp32"), threads=2)
    assert gen.generate(TEXTS[11], max_new_tokens=32, temperature=0.0).strip() == ANSWER
    assert not (tmp_path / "build" / "based" / "teacher-bundle-fp32").exists()  # no teacher weights to export
    from edgestill.benchmarks.__main__ import main as bench_main

    assert bench_main([str(recipe), "--build-root", str(tmp_path / "build")]) == 0
    report = json.loads((tmp_path / "build" / "based" / "report" / "report.json").read_text())
    assert {m["role"] for m in report["models"]} == {"student"}  # the served teacher is not measured here
    assert any("pretrained base" in n and "a vocabulary of its own" in n for n in report["notes"])
    soft = base_recipe(tmp_path, "openai", models["foreign"], {"kind": "forward_kl", "alpha": 0.5},
                       teacher={"base_url": url, "model": "m"})
    with pytest.raises(UserError, match="teacher.tokenizer for soft targets"):
        load_recipe(soft)
