"""Golden-value tests of the distillation losses on tiny tensors."""

import math

import torch

from distill.losses import distill_loss, hard_ce, topk_forward_kl


def test_hard_ce_matches_hand_computation():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    targets = torch.tensor([0, 2])
    mask = torch.tensor([True, True])
    expect = ((-2 + math.log(math.exp(2) + 2)) + (math.log(2 + math.e))) / 2
    assert abs(hard_ce(logits, targets, mask).item() - expect) < 1e-6


def test_hard_ce_ignores_masked_positions():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    targets = torch.tensor([0, 2])
    only_first = hard_ce(logits, targets, torch.tensor([True, False])).item()
    assert abs(only_first - (-2 + math.log(math.exp(2) + 2))) < 1e-6


def test_kl_is_zero_when_student_matches_teacher_on_topk():
    logits = torch.tensor([[3.0, 1.0, 0.5, -2.0]])
    ids = torch.tensor([[0, 1]])
    teacher_logp = torch.log_softmax(logits, -1)[:, :2] - 5.0  # any shift: renormalised away
    kl = topk_forward_kl(logits, ids, teacher_logp, torch.tensor([True]), temperature=2.0)
    assert abs(kl.item()) < 1e-6


def test_kl_golden_value_with_temperature():
    # teacher over top-2 at T=1: log-probs log(0.8), log(0.2); at T=2 renormalised: p ∝ sqrt
    t_logp = torch.log(torch.tensor([[0.8, 0.2]]))
    student_logits = torch.tensor([[0.0, 0.0, 5.0]])  # uniform over ids 0, 1 after restriction
    kl = topk_forward_kl(student_logits, torch.tensor([[0, 1]]), t_logp, torch.tensor([True]), 2.0)
    p = torch.tensor([math.sqrt(0.8), math.sqrt(0.2)])
    p = p / p.sum()
    expect = float((p * (p.log() - math.log(0.5))).sum()) * 4
    assert abs(kl.item() - expect) < 1e-5


def test_alpha_blend():
    logits = torch.randn(5, 11, generator=torch.Generator().manual_seed(0))
    targets = torch.randint(0, 11, (5,), generator=torch.Generator().manual_seed(1))
    ids = torch.stack([torch.randperm(11, generator=torch.Generator().manual_seed(i))[:4] for i in range(5)])
    logp = torch.log_softmax(torch.randn(5, 4, generator=torch.Generator().manual_seed(2)), -1)
    mask = torch.ones(5, dtype=torch.bool)
    total, ce, kl = distill_loss(logits, targets, ids, logp, mask, alpha=0.3, temperature=1.5)
    assert abs(total.item() - (0.3 * ce.item() + 0.7 * kl.item())) < 1e-6
    assert kl.item() > 0 and ce.item() > 0


def test_kl_gradient_moves_student_toward_teacher():
    logits = torch.zeros(1, 3, requires_grad=True)
    t_logp = torch.log(torch.tensor([[0.9, 0.1]]))
    topk_forward_kl(logits, torch.tensor([[2, 0]]), t_logp, torch.tensor([True]), 1.0).backward()
    assert logits.grad[0, 2] < 0 < logits.grad[0, 0]  # raise the teacher's favourite, lower the other
    assert logits.grad[0, 1] == 0  # ids outside the teacher's top-k get no KL gradient
