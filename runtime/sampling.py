"""Choosing the next token from one row of logits, in numpy: greedy, temperature, top-k, top-p.

`pick(logits, temperature, top_k, top_p, rng)` is what `Generator` calls each step;
`temperature <= 0` or `top_k == 1` is greedy (argmax, lowest id on ties), otherwise it samples
with `rng` (a `numpy.random.Generator`, seeded by the caller for reproducible output).
"""

from __future__ import annotations

import numpy as np


def pick(logits: np.ndarray, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
         rng: np.random.Generator | None = None) -> int:
    """Next token id from `logits` [vocab] (any float dtype)."""
    if temperature <= 0.0 or top_k == 1:
        return int(np.argmax(logits))
    probs = softmax(logits.astype(np.float64) / temperature)
    probs = keep_top_k(probs, top_k)
    probs = keep_top_p(probs, top_p)
    rng = rng if rng is not None else np.random.default_rng()
    return int(rng.choice(probs.shape[0], p=probs / probs.sum()))


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def keep_top_k(probs: np.ndarray, k: int) -> np.ndarray:
    """Zero all but the `k` most likely tokens (k <= 0 keeps all)."""
    if k <= 0 or k >= probs.shape[0]:
        return probs
    cut = np.partition(probs, -k)[-k]
    return np.where(probs >= cut, probs, 0.0)


def keep_top_p(probs: np.ndarray, p: float) -> np.ndarray:
    """Keep the smallest set of most likely tokens whose mass reaches `p` (p >= 1 keeps all)."""
    if p >= 1.0:
        return probs
    order = np.argsort(-probs, kind="stable")
    mass = np.cumsum(probs[order]) / probs.sum()
    n = int(np.searchsorted(mass, p) + 1)  # include the token that crosses p
    out = np.zeros_like(probs)
    out[order[:n]] = probs[order[:n]]
    return out
