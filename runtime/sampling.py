"""Choosing the next token from one row of logits, in numpy: greedy, temperature, top-k, top-p,
repetition penalty, copy bias; and the checked settings for them.

`Sampling(...).checked(vocab_size)` validates the settings (SamplingError names the bad one);
`pick(logits, temperature, top_k, top_p, rng)` is what `Generator` calls each step;
`temperature == 0` or `top_k == 1` is greedy (argmax, lowest id on ties), otherwise it samples
with `rng` (a `numpy.random.Generator`, seeded by the caller for reproducible output).
`penalize(logits, seen, penalty)` is the CTRL / transformers repetition penalty: the logit of
every token already in the prompt or the answer is divided by `penalty` if positive, multiplied
if negative. `boost(logits, ids, bias)` is the copy bias: `bias` added to the logit of every
token of the input text, so an answer keeps the input's words (extractive summaries) instead of
inventing its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgestill.runtime.errors import SamplingError

MAX_TEMPERATURE = 100.0
MIN_REPETITION_PENALTY, MAX_REPETITION_PENALTY = 0.01, 100.0  # keeps penalized float32 logits finite
MAX_COPY_BIAS = 20.0


def _number(name: str, value, low: float, high: float, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise SamplingError(f"{name} must be a number, got {value!r:.40}")
    value = float(value)
    if not math.isfinite(value) or value > high or value < low or (low_open and value == low):
        side = "above" if low_open else "at least"
        raise SamplingError(f"{name}={value!r} is out of range: use a value {side} {low} and at most {high}")
    return value


def _integer(name: str, value, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise SamplingError(f"{name} must be an integer, got {value!r:.40}")
    if not low <= value <= high:
        raise SamplingError(f"{name}={value} is out of range: use {low}..{high}")
    return int(value)


@dataclass(frozen=True)
class Sampling:
    """How to choose tokens. Defaults are greedy. `top_k=0` and `top_p=1` switch those filters off."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    copy_bias: float = 0.0

    def checked(self, vocab_size: int) -> "Sampling":
        """The same settings as plain Python numbers; SamplingError names any out-of-range value."""
        seed = None if self.seed is None else _integer("seed", self.seed, 0, 2**63 - 1)
        return Sampling(temperature=_number("temperature", self.temperature, 0.0, MAX_TEMPERATURE),
                        top_k=_integer("top_k", self.top_k, 0, vocab_size),
                        top_p=_number("top_p", self.top_p, 0.0, 1.0, low_open=True),
                        repetition_penalty=_number("repetition_penalty", self.repetition_penalty,
                                                   MIN_REPETITION_PENALTY, MAX_REPETITION_PENALTY),
                        seed=seed, copy_bias=_number("copy_bias", self.copy_bias, 0.0, MAX_COPY_BIAS))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1


def penalize(logits: np.ndarray, seen: np.ndarray, penalty: float) -> np.ndarray:
    """`logits` [vocab] with the repetition penalty applied to the token ids in `seen` (a copy)."""
    if penalty == 1.0 or seen.size == 0:
        return logits
    out = logits.astype(np.float32, copy=True)
    ids = np.unique(seen)
    row = out[ids]
    out[ids] = np.where(row > 0, row / penalty, row * penalty)
    return out


def boost(logits: np.ndarray, ids: np.ndarray, bias: float) -> np.ndarray:
    """`logits` [vocab] with `bias` added at the token ids `ids` (a copy; `logits` itself when none)."""
    if bias == 0.0 or ids.size == 0:
        return logits
    out = logits.astype(np.float32, copy=True)
    out[ids] += bias
    return out


def pick(logits: np.ndarray, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
         rng: np.random.Generator | None = None) -> int:
    """Next token id from `logits` [vocab] (any float dtype)."""
    if temperature <= 0.0 or top_k == 1:
        return int(np.argmax(logits))
    x = logits.astype(np.float64)
    with np.errstate(over="ignore"):  # tiny temperatures: -inf for all but the top logit, no NaN
        probs = softmax((x - x.max()) / temperature)
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
