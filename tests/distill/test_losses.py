"""Golden-value tests of the distillation losses on tiny tensors.

Expected values are computed here with numpy and plain formulas, never with the code under test.
"""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from edgestill.distill.losses import distill_loss, hard_ce, soft_loss, topk_forward_kl
from edgestill.errors import UserError
from edgestill.recipe import Loss, load_recipe

DEFAULT_RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "default.yaml"


def np_softmax(x, t=1.0):
    z = np.exp((np.asarray(x, dtype=np.float64) - np.max(x)) / t)
    return z / z.sum()


def np_kl(p, q):
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    return float(np.sum(np.where(p > 0, p * np.log(p / q), 0.0)))


def np_jsd(p, q, beta):
    m = beta * np.asarray(p) + (1 - beta) * np.asarray(q)
    return beta * np_kl(p, m) + (1 - beta) * np_kl(q, m)


S_LOGITS = [[1.0, -0.5, 2.0, 0.3], [0.2, 0.1, -1.0, 1.5]]
T_LOGITS = [[2.0, 0.5, 1.0, -1.0], [-0.3, 0.8, 0.0, 1.0]]
ONE = torch.tensor([True])
TWO = torch.tensor([True, True])


def full(kind, temperature, beta=0.5):
    return soft_loss(torch.tensor(S_LOGITS), TWO, kind, temperature, beta,
                     teacher_logits=torch.tensor(T_LOGITS)).item()


# ---------------------------------------------------------------- CE


def test_hard_ce_matches_hand_computation():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    targets = torch.tensor([0, 2])
    mask = torch.tensor([True, True])
    expect = ((-2 + math.log(math.exp(2) + 2)) + (math.log(2 + math.e))) / 2
    assert abs(hard_ce(logits, targets, mask).item() - expect) < 1e-6


def test_hard_ce_ignores_masked_positions_and_trimmed_targets():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    only_first = -2 + math.log(math.exp(2) + 2)
    assert abs(hard_ce(logits, torch.tensor([0, 2]), torch.tensor([True, False])).item() - only_first) < 1e-6
    assert abs(hard_ce(logits, torch.tensor([0, -1]), TWO).item() - only_first) < 1e-6


# ---------------------------------------------------------------- full logits


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_full_forward_and_reverse_kl_golden(temperature):
    fwd = np.mean([np_kl(np_softmax(t, temperature), np_softmax(s, temperature))
                   for s, t in zip(S_LOGITS, T_LOGITS)]) * temperature ** 2
    rev = np.mean([np_kl(np_softmax(s, temperature), np_softmax(t, temperature))
                   for s, t in zip(S_LOGITS, T_LOGITS)]) * temperature ** 2
    assert abs(full("forward_kl", temperature) - fwd) < 1e-5
    assert abs(full("reverse_kl", temperature) - rev) < 1e-5
    assert abs(fwd - rev) > 1e-3  # the two directions really differ on this data


def test_full_jsd_golden_at_half():
    expect = np.mean([np_jsd(np_softmax(t, 2.0), np_softmax(s, 2.0), 0.5)
                      for s, t in zip(S_LOGITS, T_LOGITS)]) / 0.25 * 4.0
    assert abs(full("jsd", 2.0, 0.5) - expect) < 1e-5


def test_jsd_limits_are_forward_and_reverse_kl():
    fwd, rev = full("forward_kl", 1.0), full("reverse_kl", 1.0)
    assert full("jsd", 1.0, 0.0) == pytest.approx(fwd, abs=1e-6)
    assert full("jsd", 1.0, 1.0) == pytest.approx(rev, abs=1e-6)
    assert full("jsd", 1.0, 1e-4) == pytest.approx(fwd, rel=2e-3)
    assert full("jsd", 1.0, 1 - 1e-4) == pytest.approx(rev, rel=2e-3)
    assert 0.5 * min(fwd, rev) < full("jsd", 1.0, 0.5) < 1.5 * max(fwd, rev)  # same scale as KL


def test_full_logits_of_other_vocabulary_are_refused():
    with pytest.raises(ValueError, match="vocabulary"):
        soft_loss(torch.zeros(1, 4), ONE, "forward_kl", 1.0, teacher_logits=torch.zeros(1, 5))


# ---------------------------------------------------------------- top-k, renormalised


def test_kl_is_zero_when_student_matches_teacher_on_topk():
    logits = torch.tensor([[3.0, 1.0, 0.5, -2.0]])
    ids = torch.tensor([[0, 1]])
    teacher_logp = torch.log_softmax(logits, -1)[:, :2] - 5.0  # any shift: renormalised away
    kl = topk_forward_kl(logits, ids, teacher_logp, ONE, temperature=2.0)
    assert abs(kl.item()) < 1e-6


def test_kl_golden_value_with_temperature():
    # teacher over top-2 at T=1: log-probs log(0.8), log(0.2); at T=2 renormalised: p ∝ sqrt
    t_logp = torch.log(torch.tensor([[0.8, 0.2]]))
    student_logits = torch.tensor([[0.0, 0.0, 5.0]])  # uniform over ids 0, 1 after restriction
    kl = topk_forward_kl(student_logits, torch.tensor([[0, 1]]), t_logp, ONE, 2.0)
    p = torch.tensor([math.sqrt(0.8), math.sqrt(0.2)])
    p = p / p.sum()
    expect = float((p * (p.log() - math.log(0.5))).sum()) * 4
    assert abs(kl.item() - expect) < 1e-5


def test_topk_reverse_kl_and_jsd_golden():
    t = np.array([0.5, 0.3])  # teacher's top-2 at T=1 (ids 3, 0)
    s_logits = np.array([0.4, -1.0, 0.0, 1.1])
    s = np_softmax(s_logits[[3, 0]])  # student restricted to ids 3, 0
    tr = t / t.sum()
    kw = dict(topk_ids=torch.tensor([[3, 0]]), topk_logp=torch.log(torch.tensor(t[None], dtype=torch.float32)))
    got_rev = soft_loss(torch.tensor(s_logits[None], dtype=torch.float32), ONE, "reverse_kl", 1.0, **kw).item()
    got_jsd = soft_loss(torch.tensor(s_logits[None], dtype=torch.float32), ONE, "jsd", 1.0, 0.3, **kw).item()
    assert abs(got_rev - np_kl(s, tr)) < 1e-6
    assert abs(got_jsd - np_jsd(tr, s, 0.3) / 0.21) < 1e-6


def test_trimmed_ids_are_masked_out():
    logits = torch.tensor([[0.3, -0.2, 1.0, 0.5]])
    logp = torch.log(torch.tensor([[0.5, 0.2, 0.1]]))
    with_gap = topk_forward_kl(logits, torch.tensor([[2, -1, 0]]), logp, ONE, 1.0).item()
    t = np.array([0.5, 0.1]) / 0.6
    expect = np_kl(t, np_softmax([1.0, 0.3]))
    assert abs(with_gap - expect) < 1e-6


def test_rows_without_any_student_token_do_not_count():
    logits = torch.tensor([[0.3, -0.2, 1.0], [1.0, 0.0, 0.0]])
    ids = torch.tensor([[2, 0], [-1, -1]])
    logp = torch.log(torch.tensor([[0.6, 0.3], [0.6, 0.3]]))
    both = topk_forward_kl(logits, ids, logp, TWO, 1.0)
    first = topk_forward_kl(logits[:1], ids[:1], logp[:1], ONE, 1.0)
    assert torch.isfinite(both) and abs(both.item() - first.item()) < 1e-6


def test_kl_gradient_moves_student_toward_teacher():
    logits = torch.zeros(1, 3, requires_grad=True)
    t_logp = torch.log(torch.tensor([[0.9, 0.1]]))
    topk_forward_kl(logits, torch.tensor([[2, 0]]), t_logp, ONE, 1.0).backward()
    assert logits.grad[0, 2] < 0 < logits.grad[0, 0]  # raise the teacher's favourite, lower the other
    assert logits.grad[0, 1] == 0  # ids outside the teacher's top-k get no KL gradient


# ---------------------------------------------------------------- top-k, residual bucket


def residual(logits, ids, probs, temperature=1.0, kind="forward_kl"):
    return soft_loss(torch.tensor(logits, dtype=torch.float32), torch.ones(len(logits), dtype=torch.bool), kind,
                     temperature, tail="residual", topk_ids=torch.tensor(ids),
                     topk_logp=torch.log(torch.tensor(probs, dtype=torch.float32)))


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_residual_bucket_golden(temperature):
    s_logits = [0.5, 1.0, -0.3, 0.2, 0.0]
    ps = np_softmax(s_logits)
    s_cat = np.array([ps[1], ps[3], ps[0] + ps[2] + ps[4]])  # ids 1, 3, then everything else
    t_cat = np.array([0.6, 0.25, 0.15])
    temper = lambda c: c ** (1 / temperature) / np.sum(c ** (1 / temperature))
    expect = np_kl(temper(t_cat), temper(s_cat)) * temperature ** 2
    assert abs(residual([s_logits], [[1, 3]], [[0.6, 0.25]], temperature).item() - expect) < 1e-5


def test_residual_is_zero_when_student_is_the_teacher():
    logits = [[2.0, 0.1, -1.0, 0.7, 0.0, 0.3]]
    p = np_softmax(logits[0])
    assert abs(residual(logits, [[0, 3, 5]], [p[[0, 3, 5]].tolist()]).item()) < 1e-6


def test_residual_with_trimmed_id_drops_that_mass():
    # teacher: id 0 -> 0.5, trimmed -> 0.3, tail 0.2; categories [0.5, 0.2] renormalised
    s_logits = [0.2, 0.4, -0.1]
    ps = np_softmax(s_logits)
    expect = np_kl(np.array([0.5, 0.2]) / 0.7, [ps[0], ps[1] + ps[2]])
    assert abs(residual([s_logits], [[0, -1]], [[0.5, 0.3]]).item() - expect) < 1e-6


def test_residual_gives_gradient_outside_the_topk():
    logits = torch.zeros(1, 3, requires_grad=True)
    soft_loss(logits, ONE, "forward_kl", 1.0, tail="residual", topk_ids=torch.tensor([[0]]),
              topk_logp=torch.log(torch.tensor([[0.9]]))).backward()
    assert logits.grad[0, 0] < 0 < logits.grad[0, 1]  # teacher leaves 10% outside; student 67%
    assert torch.isfinite(logits.grad).all()


def test_residual_when_the_topk_covers_the_whole_vocabulary():
    logits = torch.tensor([[0.5, -0.5, 0.1]], requires_grad=True)
    p = np_softmax([0.5, -0.5, 0.1])
    t = np.array([0.7, 0.2, 0.1])
    loss = soft_loss(logits, ONE, "forward_kl", 1.0, tail="residual", topk_ids=torch.tensor([[0, 1, 2]]),
                     topk_logp=torch.log(torch.tensor(t[None], dtype=torch.float32)))
    loss.backward()
    assert abs(loss.item() - np_kl(t, p)) < 1e-6  # no tail left: the bucket drops out
    assert torch.isfinite(logits.grad).all()


# ---------------------------------------------------------------- dispatcher and recipe


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(5, 11, generator=g)
    targets = torch.randint(0, 11, (5,), generator=g)
    ids = torch.stack([torch.randperm(11, generator=g)[:4] for _ in range(5)])
    logp = torch.log_softmax(torch.randn(5, 4, generator=g), -1) - 0.2
    return logits, targets, ids, logp, torch.ones(5, dtype=torch.bool)


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
@pytest.mark.parametrize("tail", ["renormalise", "residual"])
def test_alpha_blend(kind, tail):
    logits, targets, ids, logp, mask = batch()
    total, parts = distill_loss(logits, targets, ids, logp, mask, Loss(kind=kind, tail=tail, alpha=0.3,
                                                                     temperature=1.5))
    assert set(parts) == {"ce", "soft"}
    assert abs(total.item() - (0.3 * parts["ce"].item() + 0.7 * parts["soft"].item())) < 1e-6
    assert parts["soft"].item() > 0 and parts["ce"].item() > 0


def test_sft_is_ce_only_and_hidden_is_weighted():
    logits, targets, ids, logp, mask = batch()
    total, parts = distill_loss(logits, targets, ids, logp, mask, Loss(kind="sft", alpha=0.3))
    assert set(parts) == {"ce"} and total.item() == parts["ce"].item()
    hidden = torch.tensor(0.25)
    total, parts = distill_loss(logits, targets, ids, logp, mask, Loss(hidden_states=2.0), hidden=hidden)
    assert abs(total.item() - (0.5 * parts["ce"].item() + 0.5 * parts["soft"].item() + 0.5)) < 1e-6


def test_teacher_logits_replace_the_topk():
    logits, targets, ids, logp, mask = batch()
    t_logits = torch.randn(5, 11, generator=torch.Generator().manual_seed(7))
    _, parts = distill_loss(logits, targets, ids, logp, mask, Loss(temperature=1.0), teacher_logits=t_logits)
    expect = np.mean([np_kl(np_softmax(t), np_softmax(s)) for s, t in zip(logits.numpy(), t_logits.numpy())])
    assert abs(parts["soft"].item() - expect) < 1e-5


def test_recipe_accepts_every_loss_kind_and_tail():
    r = load_recipe(DEFAULT_RECIPE, ["distill.loss.kind=jsd", "distill.loss.beta=0.9",
                                     "distill.loss.tail=residual", "distill.loss.hidden_states=0.5",
                                     "distill.loss.hidden_kind=mse"])
    loss = r.distill.loss
    assert (loss.kind, loss.beta, loss.tail, loss.hidden_states, loss.hidden_kind) == ("jsd", 0.9, "residual", 0.5, "mse")


@pytest.mark.parametrize("override, words", [
    ("distill.loss.kind=kl", "distill.loss.kind"), ("distill.loss.tail=drop", "distill.loss.tail"),
    ("distill.loss.beta=1.5", "beta"), ("distill.loss.hidden_states=-1", "hidden_states"),
    ("distill.loss.hidden_kind=l1", "distill.loss.hidden_kind")])
def test_recipe_refuses_bad_loss_settings(override, words):
    with pytest.raises(UserError, match=words):
        load_recipe(DEFAULT_RECIPE, [override])


def test_label_set_loss_looks_only_at_the_labels_first_tokens():
    from edgestill.distill.losses import label_set_loss

    logits = torch.tensor([[0.0, 2.0, 0.0, 9.0], [0.0, 0.0, 1.0, -9.0]])  # token 3 is no label: ignored
    label_ids = torch.tensor([1, 2])
    teacher = torch.log(torch.tensor([[0.75, 0.25], [0.5, 0.5]]))  # row 1's tie: argmax picks label 0
    s = torch.log_softmax(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), -1)
    t = torch.log(torch.tensor([[0.75, 0.25], [0.5, 0.5]]))
    ce = -(s[0, 0] + s[1, 0]) / 2
    kl = ((t.exp() * (t - s)).sum(-1)).mean()
    assert label_set_loss(logits, label_ids, teacher, 1.0).item() == pytest.approx(ce.item(), abs=1e-6)
    assert label_set_loss(logits, label_ids, teacher, 0.0).item() == pytest.approx(kl.item(), abs=1e-6)
    # the teacher's log-likelihoods need not be normalised: only their differences count
    assert label_set_loss(logits, label_ids, teacher - 5.0, 0.3).item() == pytest.approx(
        label_set_loss(logits, label_ids, teacher, 0.3).item(), abs=1e-6)
