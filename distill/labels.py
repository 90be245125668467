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

from edgestill.tensors import chat_prompt


def label_ids(tokenizer, labels: list[str], eos_id: int) -> list[list[int]]:
    """Each label's token ids (no special tokens) followed by the end token."""
    return [tokenizer(label, add_special_tokens=False)["input_ids"] + [eos_id] for label in labels]


@torch.no_grad()
def _rows(model, prompt: list[int], choices: list[list[int]]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(log p(choice) per choice [n], log-softmax rows along each choice [len(choice), V])."""
    seqs = [prompt + c for c in choices]
    width = max(map(len, seqs))
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, :len(s)] = 1
    logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits.float().cpu()
    rows, totals = [], []
    for i, c in enumerate(choices):
        logp = F.log_softmax(logits[i, len(prompt) - 1:len(prompt) - 1 + len(c)], -1)
        rows.append(logp)
        totals.append(logp[torch.arange(len(c)), torch.tensor(c)].sum())
    return torch.stack(totals), rows


def label_logp(model, tokenizer, prompts: list[str], labels: list[str]) -> torch.Tensor:
    """log p(label + end | prompt) [len(prompts), len(labels)] for chat-formatted `prompts`."""
    choices = label_ids(tokenizer, labels, tokenizer.eos_token_id)
    out = []
    for p in prompts:
        prompt = tokenizer(p, add_special_tokens=False)["input_ids"]
        out.append(_rows(model, prompt, choices)[0])
    return torch.stack(out)


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
        for m in messages:
            prompt = tokenizer(chat_prompt(tokenizer, m), add_special_tokens=False)["input_ids"]
            totals, rows = _rows(model, prompt, choices)
            best = int(totals.argmax())
            top = rows[best].topk(k, -1)
            out.append({"output": labels[best], "target_ids": choices[best], "ended": True,
                        "topk_ids": top.indices.numpy(), "topk_logp": top.values.numpy(),
                        "label_logp": dict(zip(labels, (round(float(x), 4) for x in totals)))})
        return out
    return answer
