"""Constrained answers: the model picks one of a fixed set of strings (labels), never anything else.

    gen.choose("The battery died after a day.", ["positive", "negative"])   # -> Choice("negative", {...})
    gen.choose(text)                          # the bundle's own labels (manifest "task": {"labels": [...]})

Each choice is scored by the model's log-likelihood of its tokens followed by the end token, after
the prompt: one prefill of the prompt, then a short extension per choice on the same KV cache
(rewound after each), so a two-label task costs one prefill and a few tokens. A bundle whose
cache cannot extend (fp16's re-fed cache) runs prompt + choice in one pass per choice instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from edgestill.runtime.engine import KVCache, Model
from edgestill.runtime.errors import PromptError


@dataclass(frozen=True)
class Choice:
    """The chosen string and every choice's log-likelihood (sum over its tokens and the end token)."""

    text: str
    scores: dict[str, float]


def check_choices(choices, context_length: int) -> list[str]:
    """`choices` as a list of distinct, non-empty strings (at least two); PromptError otherwise."""
    if isinstance(choices, str) or not isinstance(choices, Sequence):
        raise PromptError(f"choices={choices!r}: give a list of at least two strings")
    items = list(choices)
    if len(items) < 2:
        raise PromptError(f"choices={items!r}: give at least two strings to choose from")
    if any(not isinstance(c, str) or not c.strip() for c in items):
        raise PromptError(f"choices={items!r}: every choice must be a non-empty string")
    if len(set(items)) != len(items):
        raise PromptError(f"choices={items!r}: every choice must be different")
    if any(len(c) >= context_length for c in items):
        raise PromptError(f"choices: a choice is longer than the context ({context_length} tokens)")
    return items


def log_softmax(x: np.ndarray) -> np.ndarray:
    """log-softmax over the last axis, in `x`'s dtype (export's quality figures use it too)."""
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def sequence_logp(first: np.ndarray, rest: np.ndarray, ids: Sequence[int]) -> float:
    """log p(ids | prompt): `first` [vocab] the logits after the prompt, `rest` [len(ids) - 1, vocab]
    the logits after each of ids[:-1]."""
    rows = np.vstack([first[None, :], rest]) if len(ids) > 1 else first[None, :]
    return float(log_softmax(rows)[np.arange(len(ids)), np.asarray(ids)].sum())


def score(model: Model, prompt: list[int], choice_ids: list[list[int]]) -> list[float]:
    """log p(choice + end | prompt) for each choice's token ids (end token included)."""
    longest = max(map(len, choice_ids))
    cache = model.new_cache(1, len(prompt) + longest)
    if not isinstance(cache, KVCache):  # no extend: one pass over prompt + choice each
        out = []
        for ids in choice_ids:
            logits = model.new_cache(1, len(prompt) + len(ids)).prefill_all(prompt + ids[:-1]).astype(np.float32)
            out.append(sequence_logp(logits[len(prompt) - 1], logits[len(prompt):], ids))
        return out
    first = cache.prefill(0, prompt).astype(np.float32)
    out = []
    for ids in choice_ids:
        rest = cache.extend(ids[:-1]).astype(np.float32) if len(ids) > 1 else np.zeros((0, first.shape[0]))
        out.append(sequence_logp(first, rest, ids))
        if len(ids) > 1:
            cache.rewind(len(ids) - 1)
    return out
