"""Quality of a bundle on held-out teacher text, teacher-forced: what quantization cost.

    from edgestill.export.quality import eval_pairs, sequences, measure
    pairs = eval_pairs(build / "data" / "teacher.jsonl", fallback=[(input, output), ...])
    seqs = sequences(bundle, pairs)                      # prompt ids + teacher answer ids
    measure(Generator(bundle), seqs, reference)          # -> the manifest's "quality" figures

`reference` is an `export.validate.Reference` (the fp32 PyTorch model, results cached).

Each held-out record (split "eval" of data/teacher.jsonl: the task input and the teacher's
greedy answer) becomes one sequence: the bundle's prompt for the input, then the answer's
tokens in the bundle's own tokenizer (+ eos when the teacher stopped), so a student with a
trimmed vocabulary is scored in its own token space. Scored positions are those that predict
an answer token:

- `top1_agreement_vs_fp32`: the bundle's argmax equals the fp32 PyTorch model's argmax;
- `top1_agreement_vs_teacher`: the bundle's argmax equals the teacher's token (the teacher
  answered greedily, so its token there is its own top-1);
- `perplexity_teacher_text`: exp(mean negative log-likelihood of the teacher's tokens).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgestill.runtime import Bundle, Generator
from edgestill.runtime.choices import log_softmax
from edgestill.teacher_data import answer_sequence, read_split


@dataclass(frozen=True)
class Sequence:
    ids: list[int]  # prompt ids followed by answer ids
    prompt_len: int  # positions prompt_len-1 .. len(ids)-2 predict the answer

    @property
    def targets(self) -> np.ndarray:
        return np.asarray(self.ids[self.prompt_len:], dtype=np.int64)


def eval_pairs(teacher_jsonl: Path, fallback: list[tuple[str, str]] = (), limit: int | None = None
               ) -> list[tuple[str, str, bool]]:
    """(input, teacher answer, ended) for the eval split of `teacher_jsonl`, else `fallback`."""
    pairs = [(r.input, r.output, r.ended) for r in read_split(teacher_jsonl, "eval")]
    pairs = pairs or [(i, o, False) for i, o in fallback]
    return pairs[:limit] if limit else pairs


def sequences(bundle: Bundle, pairs: list[tuple[str, str, bool]]) -> list[Sequence]:
    """Token sequences (bundle prompt + answer [+ eos]) for `pairs`, in the bundle's tokenizer."""
    out = []
    for text, answer, ended in pairs:
        prompt = bundle.encode(text)
        answer_ids = bundle.tokenizer.encode(answer, add_special_tokens=False).ids
        seq = answer_sequence(prompt, answer_ids, ended, next(iter(bundle.eos_token_ids), None))
        if len(seq) > len(prompt):
            out.append(Sequence(seq, len(prompt)))
    return out


def measure(gen: Generator, seqs: list[Sequence], reference) -> dict:
    """The quality figures of the module docstring for the bundle behind `gen`."""
    agree_fp32 = agree_teacher = 0
    nll = 0.0
    positions = 0
    for seq in seqs:
        ref = reference.top1(seq.ids, seq.prompt_len - 1)
        logits = gen.logits(seq.ids)[seq.prompt_len - 1:-1]
        top1, targets = logits.argmax(-1), seq.targets
        agree_fp32 += int((top1 == ref).sum())
        agree_teacher += int((top1 == targets).sum())
        nll -= float(log_softmax(logits)[np.arange(len(targets)), targets].sum())
        positions += len(targets)
    if not positions:
        return {}
    return {"top1_agreement_vs_fp32": round(agree_fp32 / positions, 4),
            "top1_agreement_vs_teacher": round(agree_teacher / positions, 4),
            "perplexity_teacher_text": round(float(np.exp(nll / positions)), 3),
            "quality_texts": len(seqs), "quality_positions": positions}
