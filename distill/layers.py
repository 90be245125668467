"""Which teacher layers the student keeps, chosen on the task's own text (`student.layers: N`).

    from edgestill.distill.layers import block_influence, select_layers
    scores = block_influence(teacher, tokenizer, texts)      # one score per teacher layer
    layers = select_layers(scores, 8)                         # the 8 most influential, in order

Block influence (ShortGPT, Men et al. 2024): BI_i = 1 - mean cosine(h_i, h_{i+1}) over the token
positions of the task text, where h_i is the input and h_{i+1} the output of layer i. A layer
that barely turns its input has a low score and is the first to drop. It costs one teacher
forward pass over a few dozen training sequences (seconds), where a search that scores each
candidate set by its loss costs hundreds. It beat hand-picked first-and-last layers clearly
(docs/log.md).
"""

from __future__ import annotations

import torch

from edgestill.errors import UserError


@torch.no_grad()
def block_influence(model, tokenizer, texts: list[str], max_tokens: int = 256) -> list[float]:
    """BI of every decoder layer of `model` on `texts` (one sequence each, no padding)."""
    n = model.config.num_hidden_layers
    total = torch.zeros(n, dtype=torch.float64)
    count = 0
    model.eval()
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][:, :max_tokens]
        if ids.shape[1] == 0:
            continue
        states = model(ids.to(model.device), output_hidden_states=True).hidden_states  # n + 1 tensors [1, T, D]
        for i in range(n):
            cos = torch.nn.functional.cosine_similarity(states[i][0].double(), states[i + 1][0].double(), dim=-1)
            total[i] += float((1 - cos).sum())
        count += ids.shape[1]
    if not count:
        raise UserError("student.layers: no training text to score the teacher's layers on")
    return (total / count).tolist()


def select_layers(scores: list[float], n: int) -> list[int]:
    """Indices of the `n` highest scores, in increasing order (ties: the earlier layer)."""
    if not 1 <= n <= len(scores):
        raise UserError(f"student.layers: {n} layers asked, the teacher has {len(scores)}; give 1..{len(scores)}")
    ranked = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return sorted(ranked[:n])
