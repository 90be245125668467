"""The torch pieces that distill and export both need, in one place (neither imports the other).

- `user_message` / `chat_prompt`: the one user turn (instruction + input) in a chat template;
- `tokenized_prompts`: student prompt ids for many inputs;
- `padded`: right-padded batches of (prompt + answer) with the answer positions;
- `kl_rows` / `masked_mean`: the divergence per row and the masked mean the losses are built from;
- `bitsandbytes_config`: transformers' int8 / nf4 loading config (teacher.load_in, export.bitsandbytes).

Imported by edgestill.distill and edgestill.export only (never by the runtime: it needs torch).
"""

from __future__ import annotations

import importlib.util

import torch

from edgestill.errors import UserError


def user_message(instruction: str, text: str) -> str:
    """The single user turn: the task instruction, a blank line, then the input."""
    return f"{instruction}\n\n{text}" if instruction else text


def input_of(task, message: str) -> str:
    """The input inside a user message (`user_message`'s inverse, with `task.instruction`)."""
    head = f"{task.instruction}\n\n" if task.instruction else ""
    return message[len(head):] if message.startswith(head) else message


def chat_prompt(tokenizer, message: str) -> str:
    """`message` as one user turn in the tokenizer's chat template, ready for the answer."""
    return tokenizer.apply_chat_template([{"role": "user", "content": message}],
                                         add_generation_prompt=True, tokenize=False)


def tokenized_prompts(tokenizer, instruction: str, texts: list[str]) -> list[list[int]]:
    """Student prompt ids for many inputs, tokenized in batches with `datasets` (in memory).

    Records are read with `edgestill.files.read_jsonl`, not `datasets.load_dataset`, because a
    killed writer can leave a torn last line that our reader skips and Arrow's JSON reader rejects.
    """
    from datasets import Dataset
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()

    def tokenize(batch):
        prompts = [chat_prompt(tokenizer, user_message(instruction, t)) for t in batch["text"]]
        return {"ids": tokenizer(prompts, add_special_tokens=False)["input_ids"]}

    if not texts:
        return []
    return Dataset.from_dict({"text": texts}).map(tokenize, batched=True, batch_size=256)["ids"]


def padded(seqs: list[tuple[list[int], int]], pad_id: int):
    """(input_ids, attention_mask) [B, L] right-padded, and rows/cols [N] of the answer positions
    (each predicting the next token) for (ids, n_prompt) pairs."""
    width = max(len(s) for s, _ in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    rows, cols = [], []
    for b, (seq, n_prompt) in enumerate(seqs):
        ids[b, :len(seq)] = torch.tensor(seq)
        mask[b, :len(seq)] = 1
        n_ans = len(seq) - n_prompt
        rows += [b] * n_ans
        cols += list(range(n_prompt - 1, n_prompt - 1 + n_ans))
    return ids, mask, torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` [N] over `mask` [N] (bool); 0 when nothing is selected."""
    return (values * mask).sum() / mask.sum().clamp(min=1)


def kl_rows(p_logp: torch.Tensor, q_logp: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row over the valid categories.

    Args:
        p_logp, q_logp: [N, C] log-probs (each row normalised over its valid entries).
        valid: [N, C] bool; invalid entries count as probability 0.
    Returns:
        [N] tensor.
    """
    p_logp = p_logp.masked_fill(~valid, 0.0)
    q_logp = q_logp.masked_fill(~valid, 0.0)
    return (p_logp.exp() * valid * (p_logp - q_logp)).sum(-1)


def bitsandbytes_config(load_in: str):
    """transformers' BitsAndBytesConfig for `teacher.load_in` int8 or nf4 (fp32 compute on CPU)."""
    from transformers import BitsAndBytesConfig

    if importlib.util.find_spec("bitsandbytes") is None:
        raise UserError(f"teacher.load_in: {load_in} needs bitsandbytes: run "
                        "`.venv/bin/pip install 'bitsandbytes>=0.50'` (or install the distill extra), or use fp32")
    if load_in == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
