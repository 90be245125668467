"""Test helper: answers teacher-forced after their chat prompts, as `distill.train.Example`s."""

import numpy as np

from edgestill.distill.train import Example
from edgestill.tensors import chat_prompt, user_message


def forced_examples(tok, instruction: str, texts: list[str], answers: list[str]) -> list[Example]:
    """One Example per (text, answer): prompt + answer ids, with empty (zero) top-k rows."""
    out = []
    for t, a in zip(texts, answers):
        p = tok(chat_prompt(tok, user_message(instruction, t)), add_special_tokens=False)["input_ids"]
        ans = tok(a, add_special_tokens=False)["input_ids"]
        out.append(Example(p + ans, len(p), np.zeros((len(ans), 1), np.int32), np.zeros((len(ans), 1), np.float16)))
    return out
