"""The `teacher_noise` baseline (distill/sensitivity.py): the teacher under tiny weight noise,
scored against its own greedy answers."""

from types import SimpleNamespace

import pytest
import torch

from edgestill.distill.sensitivity import perturbed, skip_reason, teacher_noise

INSTRUCTION = "Summarize the following paragraph in one sentence."
TEXTS = ["The bakery on Main Street now opens at six, two hours earlier than before.",
         "Heavy rain closed the mountain road for a day, and the bus company added extra trains.",
         "The school choir won the regional contest with a song written by two students."]


def test_perturbed_scales_each_weight_by_about_sigma_and_leaves_the_original(tiny):
    model, _ = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    noisy = perturbed(model, 0.05, seed=3)
    w = model.model.embed_tokens.weight.detach()
    ratio = (noisy.model.embed_tokens.weight.detach() / w)[w != 0]
    assert float((ratio - 1).std()) == pytest.approx(0.05, rel=0.05)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the teacher is untouched
    again = perturbed(model, 0.05, seed=3)
    assert torch.equal(again.model.embed_tokens.weight, noisy.model.embed_tokens.weight)  # seeded


def test_skip_reasons():
    assert "server" in skip_reason(None)
    assert "several teachers" in skip_reason(object(), several=True)
    int8 = torch.nn.Linear(2, 2)
    int8.weight = torch.nn.Parameter(torch.zeros(2, 2, dtype=torch.int8), requires_grad=False)
    assert "quantized" in skip_reason(int8)
    assert "server" in skip_reason(torch.nn.Linear(2, 2), served=True)  # a tokenizer folder's weights
    assert skip_reason(torch.nn.Linear(2, 2)) is None


def test_teacher_noise_scores_the_teacher_against_its_own_answers(tiny):
    from edgestill.distill.evaluate import greedy_answers
    from tests.distill.forced import forced_examples

    model, tok = tiny
    answers = greedy_answers(model, tok, TEXTS, INSTRUCTION, max_new_tokens=12)
    assert all(len(a.split()) >= 3 for a in answers), answers
    records = [{"input": t, "output": a} for t, a in zip(TEXTS, answers)]

    def examples():  # the answers teacher-forced, in the teacher's ids
        return forced_examples(tok, INSTRUCTION, TEXTS, answers)

    task = SimpleNamespace(instruction=INSTRUCTION, max_output_tokens=12, labels=[], fields=[])
    local = SimpleNamespace(source="local-folder", sources=[], combine="round_robin")
    recipe = SimpleNamespace(task=task, teacher=local, distill=SimpleNamespace(teacher_noise=[1e-7, 1.0], seed=0))
    result = teacher_noise(model, tok, records, examples, recipe)
    tiny_noise, big_noise = (r["quality"] for r in result["runs"])
    assert [r["sigma"] for r in result["runs"]] == [1e-7, 1.0] and result["quality"] == tiny_noise
    assert tiny_noise["rouge_l_vs_teacher"] == 1.0  # a near-identical teacher gives its own answers
    assert big_noise["rouge_l_vs_teacher"] < 1.0
    assert big_noise["token_agreement_vs_teacher"] < tiny_noise["token_agreement_vs_teacher"]
    skipped = teacher_noise(None, tok, records, examples, recipe)
    assert "runs" not in skipped and "server" in skipped["skipped"]
    served = SimpleNamespace(**{**vars(recipe), "teacher": SimpleNamespace(**{**vars(local), "source": "openai"})})
    assert "server" in teacher_noise(model, tok, records, examples, served)["skipped"]
