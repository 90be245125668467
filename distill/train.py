"""Training the student on the teacher's answers: hard CE + top-k KL, through `accelerate`.

The student sees the student prompt (its own chat template around instruction + input) and
learns the teacher's answer tokens. Logits are computed only at answer positions: with a 49k
vocabulary the LM head dominates the cost, and prompt positions carry no loss.

Checkpoints (`student/checkpoint/`: safetensors weights, optimizer state, step, RNG-free batch
order) are written atomically every `distill.checkpoint_every` steps; a killed run resumes from
the last one. Batches are a pure function of (seed, step), so a resumed run sees the same data.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from edgestill.files import atomic_write_json
from edgestill.recipe import Recipe
from distill.losses import distill_loss
from distill.prompts import chat_prompt, user_message
from distill.topk import TopkStore

log = logging.getLogger(__name__)


@dataclass
class Example:
    input_ids: list[int]  # student prompt + answer tokens
    n_prompt: int
    topk_ids: np.ndarray  # [n_answer, k]
    topk_logp: np.ndarray  # [n_answer, k]


def build_examples(records: list[dict], tokenizer, instruction: str, store: TopkStore) -> list[Example]:
    """Student-side training examples from teacher records (split == "train")."""
    out = []
    for r in records:
        prompt = chat_prompt(tokenizer, user_message(instruction, r["input"]))
        p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids, logp = store.read(r["topk_offset"], r["topk_len"])
        out.append(Example(p_ids + list(r["target_ids"]), len(p_ids), ids, logp))
    return out


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch plus flat answer positions.

    Returns input_ids/attention_mask [B, L]; rows/cols [N] (answer positions, each predicting
    the next token); targets [N]; topk_ids/topk_logp [N, k].
    """
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    rows, cols, targets = [], [], []
    for b, e in enumerate(examples):
        ids[b, :len(e.input_ids)] = torch.tensor(e.input_ids)
        mask[b, :len(e.input_ids)] = 1
        n_ans = len(e.input_ids) - e.n_prompt
        rows += [b] * n_ans
        cols += list(range(e.n_prompt - 1, e.n_prompt - 1 + n_ans))
        targets += e.input_ids[e.n_prompt:]
    return {"input_ids": ids, "attention_mask": mask, "rows": torch.tensor(rows), "cols": torch.tensor(cols),
            "targets": torch.tensor(targets),
            "topk_ids": torch.from_numpy(np.concatenate([e.topk_ids for e in examples])),
            "topk_logp": torch.from_numpy(np.concatenate([e.topk_logp for e in examples]))}


class AnswerLogits(torch.nn.Module):
    """Wraps a causal LM: forward(batch) -> logits [N, V] at the batch's answer positions only."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, rows, cols):
        hidden = self.model.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.model.lm_head(hidden[rows, cols])


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> list[int]:
    """The example indices of `step`: epochs of seeded permutations, so resumes see the same data."""
    per_epoch = max(1, n // batch_size)
    epoch, pos = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return order[pos * batch_size:(pos + 1) * batch_size].tolist()


def lr_lambda(warmup: int, total: int):
    """Linear warmup then cosine decay to 10% of the peak."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return f


def train(recipe: Recipe, student, tokenizer, examples: list[Example], ckpt_dir: Path) -> dict:
    """Train `student` in place; return a summary (losses, tokens/s, steps, seconds)."""
    from accelerate import Accelerator

    d = recipe.distill
    torch.manual_seed(d.seed)
    accelerator = Accelerator(cpu=True)
    module = AnswerLogits(student)
    opt = torch.optim.AdamW(student.parameters(), lr=d.lr, weight_decay=d.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(d.warmup_steps, d.steps))
    state = _load_checkpoint(ckpt_dir, student, opt, sched)
    module, opt = accelerator.prepare(module, opt)
    history, tokens, t0 = state["history"], 0, time.perf_counter()
    bar = tqdm(range(state["step"], d.steps), initial=state["step"], total=d.steps, desc="training student")
    for step in bar:
        batch = collate([examples[i] for i in batch_indices(len(examples), d.batch_size, step, d.seed)],
                        tokenizer.pad_token_id)
        logits = module(batch["input_ids"], batch["attention_mask"], batch["rows"], batch["cols"])
        loss, ce, kl = distill_loss(logits, batch["targets"], batch["topk_ids"], batch["topk_logp"],
                                    torch.ones_like(batch["targets"], dtype=torch.bool),
                                    d.loss.alpha, d.loss.temperature)
        opt.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        sched.step()
        tokens += int(batch["attention_mask"].sum())
        history.append({"step": step + 1, "loss": loss.item(), "ce": ce.item(), "kl": kl.item()})
        bar.set_postfix(loss=f"{loss.item():.3f}", ce=f"{ce.item():.3f}", kl=f"{kl.item():.3f}",
                        tok_s=f"{tokens / (time.perf_counter() - t0):.0f}")
        if (step + 1) % d.checkpoint_every == 0 and step + 1 < d.steps:
            _save_checkpoint(ckpt_dir, student, opt, sched, step + 1, history)
    seconds = time.perf_counter() - t0
    return {"steps": d.steps, "resumed_from": state["step"], "seconds": round(seconds, 1),
            "tokens_per_s": round(tokens / seconds, 1) if seconds else None,
            "first_loss": history[0] if history else None, "last_loss": history[-1] if history else None,
            "history": history}


def _save_checkpoint(folder: Path, model, opt, sched, step: int, history: list) -> None:
    from safetensors.torch import save_model

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / "model.safetensors"))
    torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, tmp / "optimizer.pt")
    atomic_write_json(tmp / "state.json", {"step": step, "history": history})
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def _load_checkpoint(folder: Path, model, opt, sched) -> dict:
    if not (folder / "state.json").is_file():
        return {"step": 0, "history": []}
    from safetensors.torch import load_model

    load_model(model, str(folder / "model.safetensors"))
    states = torch.load(folder / "optimizer.pt", weights_only=True)
    opt.load_state_dict(states["optimizer"])
    sched.load_state_dict(states["scheduler"])
    state = json.loads((folder / "state.json").read_text())
    log.info("resuming training from step %d", state["step"])
    return state
