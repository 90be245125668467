"""Training the student on the teacher's answers: hard CE + top-k KL, through `accelerate`.

The student sees the student prompt (its own chat template around instruction + input) and
learns the teacher's answer tokens. Logits are computed only at answer positions: with a 49k
vocabulary the LM head dominates the cost, and prompt positions carry no loss.

Checkpoints (`student/checkpoint/`: safetensors weights, optimizer state, step, RNG-free batch
order) are written atomically every `distill.checkpoint_every` steps; a killed run resumes from
the last one. Batches are a pure function of (seed, step), so a resumed run sees the same data.
"""

from __future__ import annotations

import contextlib
import dataclasses
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
from edgestill.errors import UserError
from edgestill.recipe import Loss, Recipe
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


RATIONALE_PREFIX = "[rationale] "  # distilling step-by-step: the auxiliary task's prompt prefix


def build_examples(records: list[dict], tokenizer, instruction: str, store: TopkStore,
                   id_map: np.ndarray | None = None, rationale: bool = False) -> list[Example]:
    """Student-side examples from teacher records; `id_map` maps teacher ids to a trimmed student
    vocabulary (-1 for ids the student lacks: masked in the soft-target loss).

    With `rationale`, a record's `rationale` (the teacher's step-by-step explanation) becomes a
    second example whose prompt starts with RATIONALE_PREFIX (distilling step-by-step, trained as a
    second task; the label task keeps the plain prompt, so inference and bundles are unchanged).
    Rationale tokens have hard targets only: their top-k rows are all -1 (masked).
    """
    out = []
    for r in records:
        p_ids = _prompt_ids(tokenizer, instruction, r["input"])
        ids, logp = store.read(r["topk_offset"], r["topk_len"])
        targets = list(r["target_ids"])
        if id_map is not None:
            targets = id_map[np.asarray(targets, dtype=np.int64)].tolist()
            ids = id_map[ids.astype(np.int64)]
            if min(targets, default=0) < 0:
                raise ValueError(f"record {r['id']}: an answer token is missing from the trimmed vocabulary")
        out.append(Example(p_ids + targets, len(p_ids), ids, logp))
        if rationale and r.get("rationale"):
            out.append(_rationale_example(tokenizer, instruction, r, ids.shape[1]))
    return out


def _prompt_ids(tokenizer, instruction: str, text: str) -> list[int]:
    return tokenizer(chat_prompt(tokenizer, user_message(instruction, text)), add_special_tokens=False)["input_ids"]


def _rationale_example(tokenizer, instruction: str, record: dict, k: int) -> Example:
    p_ids = _prompt_ids(tokenizer, RATIONALE_PREFIX + instruction, record["input"])
    t_ids = tokenizer(record["rationale"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    n = len(t_ids)
    return Example(p_ids + t_ids, len(p_ids), np.full((n, k), -1, dtype=np.int64), np.zeros((n, k), np.float16))


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


def split_batch(indices: list[int], parts: int) -> list[list[int]]:
    """`indices` cut into `parts` contiguous micro-batches (sizes differ by at most one)."""
    return [a.tolist() for a in np.array_split(np.asarray(indices, dtype=np.int64), parts)]


def answer_tokens(examples: list[Example], indices: list[int]) -> int:
    return sum(len(examples[i].input_ids) - examples[i].n_prompt for i in indices)


def train(recipe: Recipe, student, tokenizer, examples: list[Example], ckpt_dir: Path,
          loss_cfg: Loss | None = None, desc: str = "training student") -> dict:
    """Train `student` in place with `loss_cfg` (default: the recipe's loss); return a summary.

    One optimizer step sees `distill.batch_size` examples, cut into `processes x grad_accum`
    micro-batches. Each micro-batch's mean loss is weighted by its share of the step's answer
    tokens, so the gradient equals the single-process, single-batch one whatever the split
    (tested: 2 processes under `accelerate launch` match 1 process).
    """
    from accelerate import Accelerator

    d, cfg = recipe.distill, loss_cfg or recipe.distill.loss
    torch.manual_seed(d.seed)
    acc = Accelerator(cpu=True)
    world, rank = acc.num_processes, acc.process_index
    if min(len(examples), d.batch_size) < world * d.grad_accum:
        raise UserError(f"distill.batch_size {d.batch_size} (and {len(examples)} training examples) cannot be "
                        f"split into {world} processes x distill.grad_accum {d.grad_accum} micro-batches")
    module = AnswerLogits(student)
    opt = torch.optim.AdamW(student.parameters(), lr=d.lr, weight_decay=d.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(d.warmup_steps, d.steps))
    state = _load_checkpoint(ckpt_dir, student, opt, sched)
    module, opt = acc.prepare(module, opt)
    history, tokens, t0 = state["history"], 0, time.perf_counter()
    bar = tqdm(range(state["step"], d.steps), initial=state["step"], total=d.steps, desc=desc,
               disable=not acc.is_main_process)
    for step in bar:
        indices = batch_indices(len(examples), d.batch_size, step, d.seed)
        parts = _train_step(acc, module, opt, examples, indices, tokenizer.pad_token_id, cfg, world, rank, d.grad_accum)
        acc.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        sched.step()
        tokens += sum(len(examples[i].input_ids) for i in indices)
        history.append({"step": step + 1, **parts})
        bar.set_postfix(**{k: f"{v:.3f}" for k, v in parts.items()},
                        tok_s=f"{tokens / (time.perf_counter() - t0):.0f}")
        if (step + 1) % d.checkpoint_every == 0 or step + 1 == d.steps:  # the last one lets a kill during
            # the baselines or the evaluation resume without training again
            if acc.is_main_process:
                _save_checkpoint(ckpt_dir, student, opt, sched, step + 1, history)
            acc.wait_for_everyone()
    seconds = time.perf_counter() - t0
    return {"steps": d.steps, "resumed_from": state["step"], "seconds": round(seconds, 1), "processes": world,
            "grad_accum": d.grad_accum, "loss": dataclasses.asdict(cfg),
            "tokens_per_s": round(tokens / seconds, 1) if seconds else None,
            "first_loss": history[0] if history else None, "last_loss": history[-1] if history else None,
            "history": history}


def _train_step(acc, module, opt, examples, indices, pad_id, cfg: Loss, world, rank, accum) -> dict:
    """Forward/backward of this process's micro-batches of one step; returns the step's mean losses."""
    n_all = answer_tokens(examples, indices)
    mine = split_batch(indices, world * accum)[rank::world]
    opt.zero_grad(set_to_none=True)
    totals: dict[str, torch.Tensor] = {}
    for m, piece in enumerate(mine):
        batch = collate([examples[i] for i in piece], pad_id)
        share = answer_tokens(examples, piece) / n_all
        sync = contextlib.nullcontext() if m == len(mine) - 1 else acc.no_sync(module)
        with sync:
            logits = module(batch["input_ids"], batch["attention_mask"], batch["rows"], batch["cols"])
            loss, parts = step_loss(logits, batch, cfg)
            acc.backward(loss * share * world)  # DDP averages over processes: world cancels out
        for k, v in parts.items():
            totals[k] = totals.get(k, 0.0) + v.detach() * share
    reduced = acc.reduce(torch.stack(list(totals.values())), reduction="sum")
    return {k: float(v) for k, v in zip(totals, reduced)}


def sft_loss(cfg: Loss) -> Loss:
    """The SFT-only baseline's loss: hard targets alone (no soft targets), otherwise as `cfg`."""
    return dataclasses.replace(cfg, alpha=1.0)


def step_loss(logits: torch.Tensor, batch: dict, cfg: Loss) -> tuple[torch.Tensor, dict]:
    """The configured loss on one micro-batch; returns (loss, {"loss", "ce", "kl"} scalars)."""
    valid = torch.ones_like(batch["targets"], dtype=torch.bool)
    loss, ce, kl = distill_loss(logits, batch["targets"], batch["topk_ids"], batch["topk_logp"], valid,
                                cfg.alpha, cfg.temperature)
    return loss, {"loss": loss, "ce": ce, "kl": kl}


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
