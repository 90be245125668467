"""Label tasks (`task.labels`): answers chosen among a closed label set by log-likelihood.

    scores = label_logp(model, tokenizer, prompts, labels)           # [n prompts, n labels]
    answer = label_answerer(model, tokenizer, labels)                # the teacher, for prepare_answers

A label's score is log p(label tokens + end token | prompt) under the model's own chat prompt,
so a model answers with exactly one label, however verbose its free text would be. The
teacher's answer is its best label; its soft targets are its top-k log-probs along that label's
tokens (the same store as free-text answers: row t predicts target_ids[t]), so the student learns
the teacher's preference among the labels at the label's first token. The student is scored the
same way (`choose`): constrained, never free text.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgestill.tensors import chat_prompt, padded


def label_ids(tokenizer, labels: list[str], eos_id: int) -> list[list[int]]:
    """Each label's token ids (no special tokens) followed by the end token."""
    return [tokenizer(label, add_special_tokens=False)["input_ids"] + [eos_id] for label in labels]


@torch.no_grad()
def _rows(model, prompts: list[list[int]], choices: list[list[int]]) -> tuple[torch.Tensor, list[list[torch.Tensor]]]:
    """For every prompt and choice: (log p(choice | prompt) [n prompts, n choices], log-softmax rows
    along each choice [len(choice), V] per prompt and choice).

    The prompts run once (right-padded, with a KV cache); each choice's tokens then run on that
    cache at the positions right after each prompt (explicit position ids, the padding between
    masked out), and the cache is cropped back. With one-token labels + end token that is one
    token per label instead of a second pass over the whole prompt."""
    dev = model.device
    ids, mask, _, _ = padded([(p, len(p)) for p in prompts], 0)
    lengths = torch.tensor([len(p) for p in prompts])
    out = model.model(input_ids=ids.to(dev), attention_mask=mask.to(dev), use_cache=True)
    cache = out.past_key_values
    last = out.last_hidden_state[torch.arange(len(prompts)), (lengths - 1).to(dev)]  # predicts each choice's 1st token
    per_choice = []
    for c in choices:
        states = [last[:, None]]
        if len(c) > 1:
            n = len(c) - 1
            step_ids = torch.tensor(c[:-1]).expand(len(prompts), n)
            pos = lengths[:, None] + torch.arange(n)[None]
            step_mask = torch.cat([mask, torch.ones(len(prompts), n, dtype=mask.dtype)], 1)
            h = model.model(input_ids=step_ids.to(dev), attention_mask=step_mask.to(dev), position_ids=pos.to(dev),
                            past_key_values=cache, use_cache=True).last_hidden_state
            cache.crop(-n)  # back to the prompts alone
            states.append(h)
        per_choice.append(F.log_softmax(model.lm_head(torch.cat(states, 1)).float().cpu(), -1))  # [B, len(c), V]
    rows = [[per_choice[j][b] for j in range(len(choices))] for b in range(len(prompts))]
    totals = torch.tensor([[float(r[torch.arange(len(c)), torch.tensor(c)].sum()) for r, c in zip(row, choices)]
                           for row in rows])
    return totals, rows


BATCH = 16  # prompts per forward pass (each with every label)


def label_logp(model, tokenizer, prompts: list[str], labels: list[str]) -> torch.Tensor:
    """log p(label + end | prompt) [len(prompts), len(labels)] for chat-formatted `prompts`."""
    choices = label_ids(tokenizer, labels, tokenizer.eos_token_id)
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    return torch.cat([_rows(model, ids[i:i + BATCH], choices)[0] for i in range(0, len(ids), BATCH)])


def choose(model, tokenizer, messages: list[str], labels: list[str]) -> list[str]:
    """The most likely label for each user message, in the model's own chat template."""
    prompts = [chat_prompt(tokenizer, m) for m in messages]
    best = label_logp(model, tokenizer, prompts, labels).argmax(-1).tolist()
    return [labels[i] for i in best]


def label_answerer(model, tokenizer, labels: list[str], eos_ids: list[int]):
    """`answer(user_messages, max_new_tokens, k)` for `prepare_answers`: the teacher's best label,
    its token ids + end token as `target_ids`, and its top-k log-probs along them."""
    choices = label_ids(tokenizer, labels, eos_ids[0])

    def answer(messages: list[str], max_new_tokens: int, k: int) -> list[dict]:
        out = []
        prompts = [tokenizer(chat_prompt(tokenizer, m), add_special_tokens=False)["input_ids"] for m in messages]
        for start in range(0, len(prompts), BATCH):
            totals, rows = _rows(model, prompts[start:start + BATCH], choices)
            for scores, along in zip(totals, rows):
                best = int(scores.argmax())
                top = along[best].topk(k, -1)
                out.append({"output": labels[best], "target_ids": choices[best], "ended": True,
                            "topk_ids": top.indices.numpy(), "topk_logp": top.values.numpy(),
                            "label_logp": dict(zip(labels, (round(float(x), 4) for x in scores)))})
        return out
    return answer
