"""Training the student on the teacher's answers: hard CE + top-k KL, through `accelerate`.

The student sees the student prompt (its own chat template around instruction + input) and
learns the teacher's answer tokens. Logits are computed only at answer positions: with a 49k
vocabulary the LM head dominates the cost, and prompt positions carry no loss.

Arithmetic: bf16 autocast with fp32 master weights where the hardware has native bf16, else fp32
(`distill.precision`); the RMSNorm weights train at `distill.norm_lr_scale` x the learning rate.

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

from edgestill.distill.device import (
    accelerator,
    process_state,
    to_device,
    train_precision,
)
from edgestill.distill.hidden import (
    HiddenStateLoss,
    LayerTap,
    default_layer_map,
    gather_answers,
    spread_layer_map,
    teacher_answer_states,
)
from edgestill.distill.losses import distill_loss, label_set_loss
from edgestill.distill.topk import TopkStore
from edgestill.errors import UserError
from edgestill.files import atomic_write_json
from edgestill.recipe import Loss, Recipe
from edgestill.tensors import chat_prompt, padded, tokenized_prompts, user_message

log = logging.getLogger(__name__)


@dataclass
class Example:
    input_ids: list[int]  # student prompt + answer tokens
    n_prompt: int
    topk_ids: np.ndarray  # [n_answer, k]
    topk_logp: np.ndarray  # [n_answer, k]
    t_input_ids: list[int] | None = None  # teacher prompt + answer in teacher ids (hidden-state loss)
    t_n_prompt: int = 0
    h_cols: list[int] | None = None  # hidden-state loss positions in input_ids (default: the answer's)
    t_h_cols: list[int] | None = None  # the same tokens' positions in t_input_ids
    label_ids: list[int] | None = None  # label task: each label's first token (student ids)
    label_logp: list[float] | None = None  # the teacher's log-likelihood of each label


RATIONALE_PREFIX = "[rationale] "  # distilling step-by-step: the auxiliary task's prompt prefix


def build_examples(records: list[dict], tokenizer, instruction: str, store: TopkStore,
                   id_map: np.ndarray | None = None, rationale: bool = False,
                   teacher_tok=None, all_positions: bool = False, labels: list[str] | None = None,
                   retokenize: bool = False) -> list[Example]:
    """Student-side examples from teacher records; `id_map` maps teacher ids to a trimmed student
    vocabulary (-1 for ids the student lacks: masked in the soft-target loss).

    With `rationale`, a record's `rationale` (the teacher's step-by-step explanation) becomes a
    second example whose prompt starts with RATIONALE_PREFIX (distilling step-by-step, trained as a
    second task; the label task keeps the plain prompt, so inference and bundles are unchanged).
    Rationale tokens have hard targets only: their top-k rows are all -1 (masked).
    With `teacher_tok`, each example also carries the teacher-side tokens (its own prompt + the
    answer in teacher ids) for the hidden-state loss; with `all_positions`, that loss covers every
    student token whose teacher twin is found (`aligned_positions`), not only the answer. With
    `labels` (a label task's label set, for the label-set loss), each example carries the labels'
    first tokens and the teacher's log-likelihood of each label. With `retokenize` (a student whose
    vocabulary is not the teacher's, distill/base.py), every answer is the teacher's text in the
    student's own tokens with hard targets only.
    """
    first = label_first_ids(tokenizer, labels) if labels else None
    out = []
    for r, p_ids in zip(records, tokenized_prompts(tokenizer, instruction, [r["input"] for r in records])):
        ids, logp = store.read(r["topk_offset"], r["topk_len"])
        targets = list(r["target_ids"])
        if retokenize:
            targets, ids, logp = _retokenized(tokenizer, r, ids.shape[1])
        elif id_map is not None:
            targets = id_map[np.asarray(targets, dtype=np.int64)].tolist()
            ids = id_map[ids.astype(np.int64)]
            if min(targets, default=0) < 0:  # held-out answers may use tokens the training data did not:
                targets, ids, logp = _retokenized(tokenizer, r, ids.shape[1])  # the student's own pieces
        ex = Example(p_ids + targets, len(p_ids), ids, logp)
        if teacher_tok is not None:
            t_prompt = teacher_tok(r["prompt"], add_special_tokens=False)["input_ids"]
            ex.t_input_ids, ex.t_n_prompt = t_prompt + list(r["target_ids"]), len(t_prompt)
            if all_positions:
                ex.h_cols, ex.t_h_cols = aligned_positions(ex, id_map)
        if first is not None and "label_logp" in r:
            ex.label_ids, ex.label_logp = first, [float(r["label_logp"][label]) for label in labels]
        out.append(ex)
        if rationale and r.get("rationale"):
            out.append(_rationale_example(tokenizer, instruction, r, ids.shape[1]))
    return out


def label_first_ids(tokenizer, labels: list[str]) -> list[int]:
    """Each label's first token id; UserError when two labels share it (the label-set loss decides
    among first tokens)."""
    ids = [tokenizer(label, add_special_tokens=False)["input_ids"][0] for label in labels]
    if len(set(ids)) < len(ids):
        raise UserError(f"task.labels {labels}: two labels start with the same token, so distill.loss.labels cannot "
                        "tell them apart at the first answer token; reword the labels or set distill.loss.labels=0")
    return ids


def aligned_positions(ex: Example, id_map: np.ndarray | None) -> tuple[list[int], list[int]]:
    """(student positions, teacher positions) of the same tokens for the hidden-state loss at every
    position, each predicting the next token: the student's sequence aligned from the end with
    the teacher's (whose chat template may add a system turn before the same user turn). Where the
    tail differs (other tokenization), only the answer positions, as by default."""
    s, t = ex.input_ids, ex.t_input_ids
    t_tail = t[len(t) - len(s):] if len(t) >= len(s) else None
    if t_tail is not None and id_map is not None:
        t_tail = id_map[np.asarray(t_tail, dtype=np.int64)].tolist()
    if t_tail != s:
        n_ans = len(s) - ex.n_prompt
        return (list(range(ex.n_prompt - 1, ex.n_prompt - 1 + n_ans)),
                list(range(ex.t_n_prompt - 1, ex.t_n_prompt - 1 + n_ans)))
    offset = len(t) - len(s)
    return list(range(len(s) - 1)), [offset + i for i in range(len(s) - 1)]


def _retokenized(tokenizer, record: dict, k: int):
    """The teacher's answer text in the student's tokens, hard targets only (top-k rows masked)."""
    t_ids = tokenizer(record["output"], add_special_tokens=False)["input_ids"]
    t_ids += [tokenizer.eos_token_id] if record.get("ended", True) else []
    n = len(t_ids)
    return t_ids, np.full((n, k), -1, dtype=np.int64), np.zeros((n, k), np.float16)


SEED_EPOCHS = 20  # the seeds-only baseline sees each seed example about this many times


def seed_examples(seeds, tokenizer, instruction: str, k: int) -> list[Example]:
    """The recipe's seed examples with their own outputs as hard targets: the seeds-only baseline."""
    out = []
    for s in seeds:
        p_ids = _prompt_ids(tokenizer, instruction, s.input)
        t_ids, ids, logp = _retokenized(tokenizer, {"output": s.output}, k)
        out.append(Example(p_ids + t_ids, len(p_ids), ids, logp))
    return out


def seeds_recipe(recipe: Recipe, n_seeds: int) -> Recipe:
    """The recipe with the steps that show each of `n_seeds` seeds about SEED_EPOCHS times (at most
    the recipe's own steps), in batches of at most `n_seeds`."""
    d = recipe.distill
    batch = min(d.batch_size, n_seeds)
    steps = min(d.steps, max(1, -(-SEED_EPOCHS * n_seeds // batch)))
    return dataclasses.replace(recipe, distill=dataclasses.replace(
        d, steps=steps, batch_size=batch, warmup_steps=min(d.warmup_steps, steps // 10)))


def _prompt_ids(tokenizer, instruction: str, text: str) -> list[int]:
    return tokenizer(chat_prompt(tokenizer, user_message(instruction, text)), add_special_tokens=False)["input_ids"]


def _rationale_example(tokenizer, instruction: str, record: dict, k: int) -> Example:
    p_ids = _prompt_ids(tokenizer, RATIONALE_PREFIX + instruction, record["input"])
    t_ids = tokenizer(record["rationale"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    n = len(t_ids)
    return Example(p_ids + t_ids, len(p_ids), np.full((n, k), -1, dtype=np.int64), np.zeros((n, k), np.float16))


def collate(examples: list[Example], pad_id: int, t_pad_id: int | None = None) -> dict[str, torch.Tensor]:
    """Right-padded batch plus flat answer positions.

    Returns input_ids/attention_mask [B, L]; rows/cols [N] (answer positions, each predicting
    the next token); targets [N]; topk_ids/topk_logp [N, k]; and, when the examples carry the
    teacher side, t_input_ids/t_attention_mask/t_rows/t_cols (same N answer tokens, same order).
    """
    ids, mask, rows, cols = padded([(e.input_ids, e.n_prompt) for e in examples], pad_id)
    out = {"input_ids": ids, "attention_mask": mask, "rows": rows, "cols": cols,
           "targets": torch.tensor([t for e in examples for t in e.input_ids[e.n_prompt:]], dtype=torch.long),
           "topk_ids": torch.from_numpy(np.concatenate([e.topk_ids for e in examples]).astype(np.int64)),
           "topk_logp": torch.from_numpy(np.concatenate([e.topk_logp for e in examples]))}
    if examples[0].t_input_ids is not None:
        t = padded([(e.t_input_ids, e.t_n_prompt) for e in examples], pad_id if t_pad_id is None else t_pad_id)
        out.update(zip(("t_input_ids", "t_attention_mask", "t_rows", "t_cols"), t))
        if examples[0].h_cols is not None:  # the hidden-state loss at its own positions
            out["h_rows"] = torch.tensor([b for b, e in enumerate(examples) for _ in e.h_cols], dtype=torch.long)
            out["h_cols"] = torch.tensor([c for e in examples for c in e.h_cols], dtype=torch.long)
            out["t_h_cols"] = torch.tensor([c for e in examples for c in e.t_h_cols], dtype=torch.long)
    if all(e.label_logp is not None for e in examples):  # the label-set loss: first answer rows
        sizes = [len(e.input_ids) - e.n_prompt for e in examples]
        out["first_rows"] = torch.tensor([sum(sizes[:b]) for b in range(len(examples))], dtype=torch.long)
        out["label_ids"] = torch.tensor(examples[0].label_ids, dtype=torch.long)
        out["label_logp"] = torch.tensor([e.label_logp for e in examples])
    return out


class AnswerLogits(torch.nn.Module):
    """Wraps a causal LM: forward(batch) -> logits [N, V] at the batch's answer positions only."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, rows, cols):
        hidden = self.model.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.model.lm_head(hidden[rows, cols])


class AnswerLogitsAndHidden(AnswerLogits):
    """AnswerLogits that also returns the hidden-state loss against given teacher states."""

    def __init__(self, model, hidden_loss):
        super().__init__(model)
        self.hidden_loss = hidden_loss  # a submodule: its projections train and sync with the student

    def forward(self, input_ids, attention_mask, rows, cols, teacher_states, h_rows=None, h_cols=None):
        """`h_rows`/`h_cols`: where the hidden-state loss is taken (default: the answer positions)."""
        hl = self.hidden_loss
        with LayerTap(self.model, hl.student_layers) as outputs:
            logits = super().forward(input_ids, attention_mask, rows, cols)
        h_rows, h_cols = (rows, cols) if h_rows is None else (h_rows, h_cols)
        states = gather_answers(outputs, hl.student_layers, h_rows, h_cols)
        return logits, hl(states, teacher_states, torch.ones_like(h_rows, dtype=torch.bool))


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
          loss_cfg: Loss | None = None, desc: str = "training student", teacher=None,
          teacher_pad_id: int | None = None, bar_position: int = 0) -> dict:
    """Train `student` in place with `loss_cfg` (default: the recipe's loss); return a summary.

    One optimizer step sees `distill.batch_size` examples, cut into `processes x grad_accum`
    micro-batches. Each micro-batch's mean loss is weighted by its share of the step's answer
    tokens, so the gradient equals the single-process, single-batch one whatever the split
    (tested: 2 processes under `accelerate launch` match 1 process). With
    `loss.hidden_states > 0`, `teacher` (the local teacher model) runs on each micro-batch for the
    hidden-state loss; the examples must carry the teacher side (`build_examples(teacher_tok=...)`).
    """
    d, cfg = recipe.distill, loss_cfg or recipe.distill.loss
    torch.manual_seed(d.seed)
    device = process_state(recipe.device).device
    precision = train_precision(d.precision, device)
    acc = accelerator(device, precision)
    world, rank = acc.num_processes, acc.process_index
    if min(len(examples), d.batch_size) < world * d.grad_accum:
        raise UserError(f"distill.batch_size {d.batch_size} (and {len(examples)} training examples) cannot be "
                        f"split into {world} processes x distill.grad_accum {d.grad_accum} micro-batches")
    if teacher is not None:
        teacher.to(acc.device)  # the hidden-state loss runs it on the student's batches
    module = _trainable(recipe, student, cfg, teacher)
    opt = torch.optim.AdamW(param_groups(module, d.lr, d.norm_lr_scale), lr=d.lr, weight_decay=d.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(d.warmup_steps, d.steps))
    state = _load_checkpoint(ckpt_dir, module, opt, sched)
    module, opt = acc.prepare(module, opt)
    history, tokens, t0 = state["history"], 0, time.perf_counter()
    bar = tqdm(range(state["step"], d.steps), initial=state["step"], total=d.steps, desc=desc,
               disable=not acc.is_main_process, position=bar_position)
    with training_attention(student, precision, device):
        for step in bar:
            indices = batch_indices(len(examples), d.batch_size, step, d.seed)
            pads = (tokenizer.pad_token_id, teacher_pad_id)
            parts = _train_step(acc, module, opt, examples, indices, pads, cfg, (world, rank, d.grad_accum), teacher)
            acc.clip_grad_norm_(module.parameters(), 1.0)
            opt.step()
            sched.step()
            tokens += sum(len(examples[i].input_ids) for i in indices)
            history.append({"step": step + 1, **parts})
            bar.set_postfix(**{k: f"{v:.3f}" for k, v in parts.items()},
                            tok_s=f"{tokens / (time.perf_counter() - t0):.0f}")
            if (step + 1) % d.checkpoint_every == 0 or step + 1 == d.steps:  # the last one lets a kill during
                # the baselines or the evaluation resume without training again
                if acc.is_main_process:
                    _save_checkpoint(ckpt_dir, acc.unwrap_model(module), opt, sched, step + 1, history)
                acc.wait_for_everyone()
    seconds = time.perf_counter() - t0
    return {"steps": d.steps, "resumed_from": state["step"], "seconds": round(seconds, 1), "processes": world,
            "precision": precision,
            "grad_accum": d.grad_accum, "loss": dataclasses.asdict(cfg),
            "tokens_per_s": round(tokens / seconds, 1) if seconds else None,
            "first_loss": history[0] if history else None, "last_loss": history[-1] if history else None,
            "history": history}


@contextlib.contextmanager
def training_attention(student, precision: str, device):
    """The student's attention kernel while it trains: eager under bf16 on a CPU, else unchanged.

    torch's CPU flash-attention backward is slow in bf16. Measured on the default student (AMD
    EPYC with AVX512-BF16, one thread; 8 examples of up to 150 tokens, padded): a training step
    takes 3.6-3.9 s in fp32 (sdpa or eager alike), 2.6 s in bf16 with sdpa (its attention backward
    alone 0.5 s) and 1.8-1.9 s in bf16 with eager attention. Evaluation runs after, on the original."""
    before = student.config._attn_implementation
    switch = precision == "bf16" and device.type == "cpu" and before != "eager"
    if switch:
        student.set_attn_implementation("eager")
    try:
        yield
    finally:
        if switch:
            student.set_attn_implementation(before)


def param_groups(module: torch.nn.Module, lr: float, norm_scale: float) -> list[dict]:
    """AdamW groups: the normalisation weights at `norm_scale` x `lr`, everything else at `lr`."""
    norms, rest = [], []
    for name, p in module.named_parameters():
        if p.requires_grad:
            (norms if "norm" in name.lower() else rest).append(p)
    return [g for g in ({"params": rest, "lr": lr}, {"params": norms, "lr": lr * norm_scale}) if g["params"]]


def _trainable(recipe: Recipe, student, cfg: Loss, teacher) -> torch.nn.Module:
    """The module the optimizer trains: the student's answer logits [+ hidden-state projections]."""
    if cfg.hidden_states <= 0:
        return AnswerLogits(student)

    if teacher is None:
        raise UserError("distill.loss.hidden_states needs a local teacher model (the teacher runs at train time)")
    teacher.eval().requires_grad_(False)
    layer_map = (spread_layer_map(student.config.num_hidden_layers, teacher.config.num_hidden_layers)
                 if cfg.hidden_map == "spread" else default_layer_map(recipe.student.layers))
    hl = HiddenStateLoss(layer_map, student.config.hidden_size, teacher.config.hidden_size, cfg.hidden_kind)
    return AnswerLogitsAndHidden(student, hl)


def _train_step(acc, module, opt, examples, indices, pads, cfg: Loss, split, teacher) -> dict:
    """Forward/backward of this process's micro-batches of one step; returns the step's mean losses."""
    world, rank, accum = split
    n_all = answer_tokens(examples, indices)
    mine = split_batch(indices, world * accum)[rank::world]
    opt.zero_grad(set_to_none=True)
    totals: dict[str, torch.Tensor] = {}
    for m, piece in enumerate(mine):
        batch = to_device(collate([examples[i] for i in piece], *pads), acc.device)
        share = answer_tokens(examples, piece) / n_all
        sync = contextlib.nullcontext() if m == len(mine) - 1 else acc.no_sync(module)
        with sync:
            loss, parts = step_loss(module, batch, cfg, teacher)
            acc.backward(loss * share * world)  # DDP averages over processes: world cancels out
        for k, v in parts.items():
            totals[k] = totals.get(k, 0.0) + v.detach() * share
    reduced = acc.reduce(torch.stack(list(totals.values())), reduction="sum")
    return {k: float(v) for k, v in zip(totals, reduced)}


def sft_loss(cfg: Loss) -> Loss:
    """The SFT-only baseline's loss: hard targets alone (no soft targets), otherwise as `cfg`."""
    return dataclasses.replace(cfg, kind="sft", alpha=1.0, hidden_states=0.0)


def step_loss(module, batch: dict, cfg: Loss, teacher=None) -> tuple[torch.Tensor, dict]:
    """Forward and the configured loss on one micro-batch; returns (loss, {"loss", "ce", ...} scalars)."""
    args = (batch["input_ids"], batch["attention_mask"], batch["rows"], batch["cols"])
    hidden = None
    if cfg.hidden_states > 0:
        at_all = "h_cols" in batch  # the hidden-state loss at every aligned position
        t_rows, t_cols = (batch["h_rows"], batch["t_h_cols"]) if at_all else (batch["t_rows"], batch["t_cols"])
        with torch.no_grad():
            t_states = teacher_answer_states(teacher, batch["t_input_ids"], batch["t_attention_mask"],
                                             t_rows, t_cols, _unwrap(module).hidden_loss.teacher_layers)
        logits, hidden = module(*args, t_states, *((batch["h_rows"], batch["h_cols"]) if at_all else ()))
    else:
        logits = module(*args)
    valid = torch.ones_like(batch["targets"], dtype=torch.bool)
    labels = None
    if cfg.labels > 0 and "label_logp" in batch:
        labels = label_set_loss(logits[batch["first_rows"]], batch["label_ids"], batch["label_logp"], cfg.alpha)
    loss, parts = distill_loss(logits, batch["targets"], batch["topk_ids"], batch["topk_logp"], valid, cfg,
                               hidden=hidden, labels=labels)
    return loss, {"loss": loss, **parts}


def _unwrap(module):
    return getattr(module, "module", module)  # DDP wraps the module


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


def load_trained(model, ckpt_dir: Path) -> None:
    """Load the weights of `ckpt_dir`'s last checkpoint (written by `train` without a hidden-state
    loss: the trained module is AnswerLogits(model)) into `model`."""
    from safetensors.torch import load_model

    load_model(AnswerLogits(model), str(ckpt_dir / "model.safetensors"))


def _load_checkpoint(folder: Path, model, opt, sched) -> dict:
    if not (folder / "state.json").is_file():
        return {"step": 0, "history": []}
    from safetensors.torch import load_model

    load_model(model, str(folder / "model.safetensors"))
    states = torch.load(folder / "optimizer.pt", weights_only=True, map_location="cpu")  # any device resumes
    try:
        opt.load_state_dict(states["optimizer"])
    except ValueError as err:  # e.g. written before the RMSNorm weights had their own parameter group
        raise UserError(f"{folder}: this training checkpoint does not fit the optimizer of this version "
                        f"({err}); delete the folder to train from the start") from None
    sched.load_state_dict(states["scheduler"])
    state = json.loads((folder / "state.json").read_text())
    log.info("resuming training from step %d", state["step"])
    return state
