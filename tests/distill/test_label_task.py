"""A label task end to end on the tiny model: the teacher answers with a label chosen by likelihood,
the gate stops a teacher that is no better than the majority label (unless distill.force), the
report scores student and teacher against the ground-truth labels, and the exported bundle
carries the labels and answers with one of them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edgestill.files import read_jsonl
from tests.conftest import write_tiny_recipe

LABELS = ["good", "bad"]
TEXTS = [f"Review {i}: the {w} arrived {d} and works {q}." for i, (w, d, q) in enumerate(
    [("kettle", "early", "great"), ("lamp", "late", "badly"), ("mixer", "on time", "well"), ("radio", "broken", "never"),
     ("fan", "quickly", "fine"), ("clock", "damaged", "poorly"), ("toaster", "today", "perfectly"),
     ("heater", "cracked", "not at all"), ("kettle", "fast", "nicely"), ("iron", "dented", "loudly"),
     ("blender", "early", "smoothly"), ("scale", "late", "wrongly")])]


def label_recipe(tmp_path, teacher, **distill):
    eval_file = tmp_path / "labels.jsonl"
    eval_file.write_text("".join(json.dumps({"input": f"Item {i} {w}.", "output": y}) + "\n" for i, (w, y) in
                                 enumerate([("works", "good"), ("failed", "bad"), ("fine", "good"), ("broke", "bad")])))
    return write_tiny_recipe(
        tmp_path, "lab", teacher, TEXTS, device="cpu",
        task={"instruction": "Is this review good or bad?", "labels": LABELS, "eval_labels": "labels.jsonl",
              "seed_examples": [{"input": TEXTS[0], "output": "good"}, {"input": TEXTS[1], "output": "bad"}],
              "n_train": 10, "n_eval": 2, "max_output_tokens": 4},
        teacher={"batch_size": 4}, student={"layers": [0, 1]},
        distill={"steps": 4, "batch_size": 4, "lr": 1.0e-3, "warmup_steps": 1, "baselines": ["init"],
                 "loss": {"top_k": 8}, **distill})


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "edgestill.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=900, cwd=cwd)


@pytest.mark.slow
def test_label_task_end_to_end(tmp_path, tiny_llama_dir):
    recipe = label_recipe(tmp_path, tiny_llama_dir, force=True, baselines=["init", "seeds"])
    done = run("distill", recipe, "--build-root", tmp_path / "build")
    assert done.returncode == 0, done.stderr[-3000:]
    records = read_jsonl(tmp_path / "build" / "lab" / "data" / "teacher.jsonl")
    assert records and all(r["output"] in LABELS and r["ended"] for r in records)
    assert all(set(r["label_logp"]) == set(LABELS) for r in records)
    assert all(r["output"] == max(r["label_logp"], key=r["label_logp"].get) for r in records)
    report = json.loads((tmp_path / "build" / "lab" / "student" / "distill_report.json").read_text())
    q = report["quality"]
    assert report["task"]["labels"] == LABELS and report["teacher"]["gate"]["examples"] == 6
    for key in ("accuracy_vs_label", "macro_f1_vs_label", "teacher_accuracy_vs_label", "majority_label_accuracy"):
        assert 0.0 <= q[key] <= 1.0
    assert q["accuracy_vs_label_ci95"][0] <= q["accuracy_vs_label"] <= q["accuracy_vs_label_ci95"][1]
    assert "accuracy_vs_label" in report["comparisons"]["init"]
    seeds = report["baselines"]["seeds"]  # 2 seeds x 20 passes would be 20 steps: capped at the recipe's 4
    assert seeds["train"]["steps"] == 4 and 0.0 <= seeds["quality"]["accuracy_vs_label"] <= 1.0
    assert "accuracy_vs_label" in report["comparisons"]["seeds"]
    assert all(e["student"] in LABELS for e in report["examples"])

    done = run("export", recipe, "--build-root", tmp_path / "build", "export.precisions=[fp32]")
    assert done.returncode in (0, 1), done.stderr[-3000:]
    from edgestill.runtime import Bundle, Generator

    bundle = Bundle.open(tmp_path / "build" / "lab" / "bundle-fp32")
    assert bundle.labels == LABELS and Bundle.open(tmp_path / "build" / "lab" / "teacher-bundle-fp32").labels == LABELS
    assert Generator(bundle, threads=1).choose("Item 9 works.").text in LABELS


@pytest.mark.slow
def test_gate_stops_a_teacher_no_better_than_the_majority_label(tmp_path, tiny_llama_dir):
    recipe = label_recipe(tmp_path, tiny_llama_dir)
    labels = tmp_path / "labels.jsonl"  # every label the same: the majority label is always right
    labels.write_text("".join(json.dumps({"input": f"Item {i}.", "output": "good"}) + "\n" for i in range(4)))
    done = run("distill", recipe, "--build-root", tmp_path / "build")
    assert done.returncode == 2 and "teacher gate" in done.stderr and "distill.force=true" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: teacher gate") and "Traceback" not in done.stderr
    assert not (tmp_path / "build" / "lab" / "data" / "teacher.jsonl").exists()


def test_label_scores_on_a_shared_prompt_cache_equal_each_sequence_alone():
    """`_rows` runs the prompts once and each label on their KV cache; the scores and the rows
    along each label must equal a plain forward pass over prompt + label, for prompts of
    different lengths (the padding between prompt and label is masked) and labels of 1-4 tokens."""
    import torch
    import torch.nn.functional as F
    from transformers import LlamaConfig, LlamaForCausalLM

    from edgestill.distill.labels import _rows

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2)).eval()
    prompts = [[5, 6, 7, 8, 9], [11, 12], [20, 21, 22, 23, 24, 25, 26, 27]]
    choices = [[40, 41, 2], [50, 2], [60, 61, 62, 63, 2], [70]]
    totals, rows = _rows(model, prompts, choices)
    with torch.no_grad():
        for i, p in enumerate(prompts):
            for j, c in enumerate(choices):
                logp = F.log_softmax(model(torch.tensor([p + c])).logits[0], -1)[len(p) - 1:len(p) - 1 + len(c)]
                assert torch.allclose(rows[i][j], logp, atol=1e-4)
                assert abs(float(totals[i, j]) - float(logp[torch.arange(len(c)), torch.tensor(c)].sum())) < 1e-4


def test_seeds_baseline_sees_each_seed_about_twenty_times_within_the_recipes_steps(tmp_path, tiny_llama_dir):
    from edgestill.distill.train import seeds_recipe
    from edgestill.recipe import load_recipe

    recipe = load_recipe(label_recipe(tmp_path, tiny_llama_dir), ["distill.steps=100", "distill.batch_size=8",
                                                                   "distill.warmup_steps=10"])
    six = seeds_recipe(recipe, 6).distill  # batches of the 6 seeds, 20 passes = 20 steps
    assert (six.steps, six.batch_size, six.warmup_steps) == (20, 6, 2)
    many = seeds_recipe(recipe, 50).distill  # 50 x 20 / 8 = 125 steps, capped at the recipe's 100
    assert (many.steps, many.batch_size, many.warmup_steps) == (100, 8, 10)
