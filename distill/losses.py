"""Distillation losses as small pure functions (tensor shapes in the docstrings).

The training loop calls one dispatcher:

    total, parts = distill_loss(logits, targets, topk_ids, topk_logp, mask, recipe.distill.loss)

`total = alpha * CE(teacher text) + (1 - alpha) * T^2 * D(teacher || student) [+ w_h * hidden]`
with the divergence D chosen by `loss.kind`: `forward_kl` KL(p_t || p_s) (mass-covering),
`reverse_kl` KL(p_s || p_t) (mode-seeking), `jsd` the generalized Jensen-Shannon divergence of
GKD (Agarwal et al. 2024) with weight `beta`, or `sft` (CE only, no soft targets). The T^2 factor
(Hinton et al.) keeps the gradient size from shrinking with T.

Soft targets come from the teacher's full logits [N, V] when the caller has them, otherwise from
the stored top-k (ids [N, k] + log-probs [N, k] at T=1, `distill/topk.py`). Ids < 0 mark tokens
that vocabulary trimming removed from the student: they are masked out, and the teacher's
distribution is renormalised over what the student can say. The tail (mass outside the top-k)
is handled by `loss.tail`:

- `renormalise` (default): teacher and student are both restricted to the top-k ids and
  renormalised there. The stored top-k hold nearly all of the teacher's mass at T=1 but much less
  at higher temperatures (docs/log.md); the tail is spread thinly over tokens that are not the
  teacher's candidates, and its shape is unknown from the stored top-k anyway. Renormalising teaches the student to rank the
  teacher's real candidates like the teacher; the hard CE keeps the full-vocabulary likelihood
  in check. It is also the cheaper one (no [N, V] softmax in the soft loss). Hence the default.
- `residual`: one extra category: the teacher's leftover mass 1 - sum(top-k) against the
  student's mass outside those ids. The student is then also told how much mass to leave outside
  the teacher's candidates. The stored top-k are at T=1, and the teacher's tempered tail cannot
  be recovered from them, so temperature is applied to the (k + 1) category log-probs of both
  sides alike (at T=1 this is exact; the optimum is still student = teacher on the categories).

The generalized JSD is divided by beta * (1 - beta): then beta -> 0 gives forward KL and
beta -> 1 reverse KL exactly (continuous at both ends, same direction as TRL's GKD `beta`), and
for close distributions all three kinds have the same scale, so alpha and lr carry over.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from edgestill.tensors import kl_rows, masked_mean

KINDS = ("forward_kl", "reverse_kl", "jsd", "sft")
TAILS = ("renormalise", "residual")
_NEG = -1.0e30  # stands for log(0) in masked entries; finite, so no NaN reaches a gradient


def hard_ce(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy on the teacher's answer tokens (CE on teacher text).

    Args:
        logits: [N, V] student logits at answer positions.
        targets: [N] teacher token ids; ids < 0 (trimmed from the vocabulary) are skipped.
        mask: [N] bool, True where the position counts.
    Returns:
        scalar tensor.
    """
    keep = mask & (targets >= 0)
    loss = F.cross_entropy(logits.float(), targets.clamp(min=0), reduction="none")
    return masked_mean(loss, keep)


# ---------------------------------------------------------------- divergences per row


def jsd_rows(t_logp: torch.Tensor, s_logp: torch.Tensor, valid: torch.Tensor, beta: float) -> torch.Tensor:
    """Generalized JSD / (beta (1 - beta)) per row; beta=0 is KL(t || s), beta=1 is KL(s || t).

    With M = beta * t + (1 - beta) * s: (beta KL(t || M) + (1 - beta) KL(s || M)) / (beta (1 - beta)).

    Args:
        t_logp, s_logp: [N, C] teacher and student log-probs.
        valid: [N, C] bool.
        beta: in [0, 1].
    Returns:
        [N] tensor.
    """
    if beta <= 0.0:
        return kl_rows(t_logp, s_logp, valid)
    if beta >= 1.0:
        return kl_rows(s_logp, t_logp, valid)
    t_logp = t_logp.masked_fill(~valid, 0.0)
    s_logp = s_logp.masked_fill(~valid, 0.0)
    m_logp = torch.logaddexp(t_logp + math.log(beta), s_logp + math.log1p(-beta))
    jsd = beta * kl_rows(t_logp, m_logp, valid) + (1 - beta) * kl_rows(s_logp, m_logp, valid)
    return jsd / (beta * (1 - beta))


def divergence_rows(kind: str, t_logp: torch.Tensor, s_logp: torch.Tensor, valid: torch.Tensor,
                    beta: float = 0.5) -> torch.Tensor:
    """The divergence `kind` (forward_kl | reverse_kl | jsd) per row; shapes as `kl_rows`."""
    if kind == "forward_kl":
        return kl_rows(t_logp, s_logp, valid)
    if kind == "reverse_kl":
        return kl_rows(s_logp, t_logp, valid)
    if kind == "jsd":
        return jsd_rows(t_logp, s_logp, valid, beta)
    raise ValueError(f"unknown divergence kind {kind!r}; allowed: forward_kl, reverse_kl, jsd")


# ---------------------------------------------------------------- teacher vs student distributions


def full_logprobs(logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float):
    """Tempered full-vocabulary log-probs of both sides.

    Args:
        logits: [N, V] student logits.
        teacher_logits: [N, V] teacher logits over the same vocabulary.
        temperature: T > 0.
    Returns:
        (t_logp [N, V], s_logp [N, V], valid [N, V] all True).
    """
    if teacher_logits.shape != logits.shape:
        raise ValueError(f"teacher logits {tuple(teacher_logits.shape)} and student logits "
                         f"{tuple(logits.shape)} differ; map the teacher to the student's vocabulary first")
    t_logp = torch.log_softmax(teacher_logits.float() / temperature, dim=-1)
    s_logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return t_logp, s_logp, torch.ones_like(s_logp, dtype=torch.bool)


def topk_logprobs(logits: torch.Tensor, topk_ids: torch.Tensor, topk_logp: torch.Tensor,
                  temperature: float, tail: str = "renormalise"):
    """Teacher and student tempered log-probs over the teacher's top-k categories.

    Args:
        logits: [N, V] student logits.
        topk_ids: [N, k] teacher's top-k token ids (int); < 0 where the student lacks the token
            (the log-prob of such an entry stays as stored: it counts as teacher mass to drop).
        topk_logp: [N, k] teacher's log-probs at T=1 for those ids.
        temperature: T > 0, applied to the category log-probs of both sides.
        tail: "renormalise" (C = k) or "residual" (C = k + 1, last column is the tail bucket).
    Returns:
        (t_logp [N, C], s_logp [N, C], valid [N, C] bool).
    """
    if tail not in TAILS:
        raise ValueError(f"unknown tail {tail!r}; allowed: {', '.join(TAILS)}")
    valid = topk_ids >= 0
    ids = topk_ids.clamp(min=0).long()
    t_cat = topk_logp.float()
    s_cat = torch.gather(logits.float(), -1, ids)  # logits: their log_softmax cancels below
    if tail == "residual":
        s_full = torch.log_softmax(logits.float(), dim=-1)
        s_cat = torch.cat([torch.gather(s_full, -1, ids), _outside_logp(s_full, ids, valid)], -1)
        t_rest = (1.0 - topk_logp.float().exp().sum(-1, keepdim=True)).clamp(min=1e-8).log()
        t_cat = torch.cat([t_cat, t_rest], -1)
        has_rest = (_in_topk(ids, valid, logits.shape[-1]).sum(-1, keepdim=True) < logits.shape[-1])
        valid = torch.cat([valid, has_rest], -1)
    t_logp = torch.log_softmax(t_cat.masked_fill(~valid, _NEG) / temperature, dim=-1)
    s_logp = torch.log_softmax(s_cat.masked_fill(~valid, _NEG) / temperature, dim=-1)
    return t_logp, s_logp, valid


def _in_topk(ids: torch.Tensor, valid: torch.Tensor, vocab: int) -> torch.Tensor:
    """[N, V] bool: True at the valid top-k ids of each row."""
    hits = torch.zeros(ids.shape[0], vocab, device=ids.device)
    return hits.scatter_add_(-1, ids, valid.float()) > 0


def _outside_logp(s_full: torch.Tensor, ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """[N, 1] log of the student's mass outside the valid top-k ids (s_full: [N, V] log-probs)."""
    rest = s_full.masked_fill(_in_topk(ids, valid, s_full.shape[-1]), _NEG)  # finite: no NaN gradient
    return torch.logsumexp(rest, dim=-1, keepdim=True)


# ---------------------------------------------------------------- soft loss and dispatcher


def soft_loss(logits: torch.Tensor, mask: torch.Tensor, kind: str, temperature: float, beta: float = 0.5,
              tail: str = "renormalise", topk_ids: torch.Tensor | None = None,
              topk_logp: torch.Tensor | None = None, teacher_logits: torch.Tensor | None = None) -> torch.Tensor:
    """T^2 * mean divergence(teacher || student) over masked rows, from full or top-k teacher data.

    Args:
        logits: [N, V] student logits.
        mask: [N] bool.
        kind: forward_kl | reverse_kl | jsd.
        temperature: T > 0. beta: JSD weight in [0, 1]. tail: renormalise | residual (top-k only).
        topk_ids, topk_logp: [N, k] stored teacher top-k (used when teacher_logits is None).
        teacher_logits: [N, V] full teacher logits.
    Returns:
        scalar tensor.
    """
    if teacher_logits is not None:
        t_logp, s_logp, valid = full_logprobs(logits, teacher_logits, temperature)
    elif topk_ids is None or topk_logp is None:
        raise ValueError("soft_loss needs teacher_logits or both topk_ids and topk_logp")
    else:
        t_logp, s_logp, valid = topk_logprobs(logits, topk_ids, topk_logp, temperature, tail)
    rows = mask & (topk_ids >= 0).any(-1) if teacher_logits is None else mask
    return masked_mean(divergence_rows(kind, t_logp, s_logp, valid, beta), rows) * temperature ** 2


def topk_forward_kl(logits: torch.Tensor, topk_ids: torch.Tensor, topk_logp: torch.Tensor,
                    mask: torch.Tensor, temperature: float, tail: str = "renormalise") -> torch.Tensor:
    """Forward KL(teacher || student) on the teacher's top-k, times T^2 (see `soft_loss`).

    Args:
        logits: [N, V]; topk_ids, topk_logp: [N, k]; mask: [N] bool; temperature: T > 0.
    Returns:
        scalar tensor.
    """
    return soft_loss(logits, mask, "forward_kl", temperature, tail=tail, topk_ids=topk_ids, topk_logp=topk_logp)


def label_set_loss(first_logits: torch.Tensor, label_ids: torch.Tensor, teacher_label_logp: torch.Tensor,
                   alpha: float) -> torch.Tensor:
    """A label task's decision, learned as a classifier: over the labels' first tokens only,
    alpha * CE on the teacher's label + (1 - alpha) * KL(teacher's label distribution || student's).

    Args:
        first_logits: [B, V] student logits at each example's first answer position.
        label_ids: [n_labels] the first token of each label (distinct), in the student's ids.
        teacher_label_logp: [B, n_labels] the teacher's log-likelihood of each whole label
            (normalised over the labels here).
        alpha: the hard-label weight, as the recipe's loss.alpha.
    Returns:
        scalar tensor.
    """
    s = F.log_softmax(first_logits.float()[:, label_ids], -1)
    t = F.log_softmax(teacher_label_logp.float(), -1)
    ce = -s.gather(1, t.argmax(-1, keepdim=True)).mean()
    kl = (t.exp() * (t - s)).sum(-1).mean()
    return alpha * ce + (1 - alpha) * kl


def distill_loss(logits, targets, topk_ids, topk_logp, mask, cfg, *,
                 teacher_logits: torch.Tensor | None = None, hidden: torch.Tensor | None = None,
                 labels: torch.Tensor | None = None):
    """The training loss of one batch: alpha * CE + (1 - alpha) * soft [+ hidden_states * hidden].

    Args:
        logits: [N, V] student logits at answer positions.
        targets: [N] teacher answer token ids.
        topk_ids, topk_logp: [N, k] the teacher's stored top-k (ids < 0 masked out).
        mask: [N] bool.
        cfg: the recipe's `Loss` (kind, temperature, alpha, beta, tail, hidden_states).
        teacher_logits: optional [N, V] full teacher logits; used instead of the top-k.
        hidden: optional scalar hidden-state loss (`distill.hidden.HiddenStateLoss`), weighted by
            `cfg.hidden_states`.
        labels: optional scalar `label_set_loss`, weighted by `cfg.labels`.
    Returns:
        (total scalar, parts {"ce", "soft" (absent for kind sft), "hidden", "labels" (when given)}).
    """
    parts = {"ce": hard_ce(logits, targets, mask)}
    if cfg.kind == "sft":
        total = parts["ce"]
    else:
        parts["soft"] = soft_loss(logits, mask, cfg.kind, cfg.temperature, cfg.beta, cfg.tail,
                                  topk_ids, topk_logp, teacher_logits)
        total = cfg.alpha * parts["ce"] + (1 - cfg.alpha) * parts["soft"]
    if hidden is not None:
        parts["hidden"] = hidden
        total = total + cfg.hidden_states * hidden
    if labels is not None:
        parts["labels"] = labels
        total = total + cfg.labels * labels
    return total, parts
