"""Calibration text and scoring for the export transforms: what the task's own data looks like to a student.

- `load_sequences(data, tokenizer, instruction, split)`: student prompt + the teacher's answer
  (+ end token when it stopped) for one split of data/teacher.jsonl, as `Seq`s;
- `calibration_ids(...)`: the token sequences smoothing and GPTQ calibrate on (the train split,
  else the prompts of some validation texts);
- `batch(seqs, pad_id)`: right-padded model inputs and the answer positions;
- `Scorer` / `agreement`: top-1 agreement and KL(reference || model) at the answer positions;
- `layer_inputs` / `run_layer`: the inputs each decoder layer is called with, to rerun a layer.

A building block of export/: it imports no transform (smooth, gptq, qat) and no distill module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from edgestill.teacher_data import answer_sequence, read_split
from edgestill.tensors import kl_rows, padded, tokenized_prompts

CALIBRATION_RECORDS = 64


def calibration_ids(model_dir: Path, calibration: Path | None, instruction: str,
                    fallback_texts: list[str]) -> list[list[int]]:
    """Token ids to calibrate on: prompt + teacher answer of the train split of `calibration`
    (data/teacher.jsonl), else the prompts of `fallback_texts`."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    if calibration is not None and Path(calibration).is_file():
        seqs = load_sequences(Path(calibration), tok, instruction, "train")[:CALIBRATION_RECORDS]
        if seqs:
            return [s.ids for s in seqs]
    return [list(p) for p in tokenized_prompts(tok, instruction, fallback_texts[:CALIBRATION_RECORDS])]


@dataclass
class Seq:
    ids: list[int]
    n_prompt: int


def load_sequences(data: Path, tokenizer, instruction: str, split: str) -> list[Seq]:
    """Student prompt + the teacher's answer (+ eos when it stopped) for one split of teacher.jsonl."""
    records = read_split(data, split)
    prompts = tokenized_prompts(tokenizer, instruction, [r.input for r in records])
    out = []
    for r, p in zip(records, prompts):
        answer = tokenizer(r.output, add_special_tokens=False)["input_ids"]
        out.append(Seq(answer_sequence(list(p), answer, r.ended, tokenizer.eos_token_id), len(p)))
    return out


ALL = torch.tensor(True)  # every category counts (full logits)


def batch(seqs: list[Seq], pad_id: int) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """(model inputs, rows, cols): right-padded ids/mask and the answer positions, as in training."""
    ids, mask, rows, cols = padded([(s.ids, s.n_prompt) for s in seqs], pad_id)
    return {"input_ids": ids, "attention_mask": mask}, rows, cols


class Scorer:
    """Top-1 agreement and mean KL(reference || model) at the positions that predict answer tokens
    of `seqs`; the reference side is computed once, so one Scorer rates many models cheaply."""

    def __init__(self, reference, seqs: list[Seq], pad_id: int, batch_size: int = 8):
        self.batches = [batch(seqs[i:i + batch_size], pad_id) for i in range(0, len(seqs), batch_size)]
        with torch.no_grad():
            self.ref = [F.log_softmax(reference(**b).logits[r, c].float(), -1) for b, r, c in self.batches]

    @torch.no_grad()
    def __call__(self, model) -> tuple[float, float]:
        same = total = 0
        kl = 0.0
        for (b, r, c), ref in zip(self.batches, self.ref):
            mine = F.log_softmax(model(**b).logits[r, c].float(), -1)  # [N, V]
            same += int((mine.argmax(-1) == ref.argmax(-1)).sum())
            kl += float(kl_rows(ref, mine, ALL).sum())
            total += len(r)
        return same / max(total, 1), kl / max(total, 1)


def agreement(model, reference, seqs: list[Seq], pad_id: int) -> tuple[float, float]:
    """(top-1 agreement, mean KL(reference || model)) at the positions that predict answer tokens."""
    return Scorer(reference, seqs, pad_id)(model)


class _Stop(Exception):
    pass


def layer_inputs(model, batches, first_only: bool = False) -> list[list[tuple[tuple, dict]]]:
    """Per batch, the (args, kwargs) each decoder layer is called with, and then the final norm's;
    with `first_only`, just the first layer's: the pass stops there, so it costs only the
    embedding lookup."""
    modules = (model.model.layers[0],) if first_only else (*model.model.layers, model.model.norm)
    out = []
    for inputs in batches:
        calls: list[tuple[tuple, dict]] = []

        def grab(_m, args, kwargs):
            calls.append((args, kwargs))
            if first_only:
                raise _Stop

        hooks = [m.register_forward_pre_hook(grab, with_kwargs=True) for m in modules]
        try:
            with torch.no_grad():
                model.model(**inputs, use_cache=False)
        except _Stop:
            pass
        finally:
            for h in hooks:
                h.remove()
        out.append(calls)
    return out


def run_layer(layer, hidden, args, kwargs):
    """The hidden states out of decoder `layer` called as it was (args, kwargs), on `hidden`."""
    out = layer(hidden, *args[1:], **kwargs)
    return out[0] if isinstance(out, tuple) else out
