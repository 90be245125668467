"""Quantization-aware distillation: a short extra pass that makes a student survive its bundle's quantization.

    python -m edgestill.export.qat build/default/student build/default/student-qat-int4 --bits 4 --block 32 \\
        --data build/default/data/teacher.jsonl --instruction "Summarize ..." [--steps 30] [--lr 3e-4] \\
        [--start gptq|weights]

(`edgestill export RECIPE export.precisions=[int4-qat]` runs it for you.)

The pass starts from GPTQ's rounding of the activation-smoothed student (export/gptq.py, on the
same train text; `--start weights`: from the student's own weights, the earlier default). Measured
on the default student, int4 block 32: simulated top-1 vs fp32 0.912 -> 0.915 in 30 steps (bundle
0.915; 60 steps: 0.916, bundle 0.914), against 0.854 -> 0.882 in 60 steps (bundle 0.886) from its
own weights.

A copy of the student trains with the bundle's quantization simulated in PyTorch:

- weights rounded per block of `block` input channels, symmetric, as onnxruntime's MatMulNBits
  quantizer does (the value of largest magnitude in a block maps to -2^(bits-1); bit-exact with
  `onnxruntime.capi._pybind_state.quantize_matmul_4bits/_8bits`, checked by a test); the tied
  embedding shares the LM head's quantized matrix, as in our int4/int8 bundles;
- the inputs of every quantized matmul rounded to int8 per block (what `accuracy_level=4` does on
  the CPU): the main loss of the int8 presets;
- gradients pass straight through both roundings (straight-through estimator).

The teacher of this pass is the fp32 student itself: the loss is KL(fp32 || quantized) at T=1 over
the whole vocabulary on every position of the train split (prompt + teacher answer), which is what
a bundle's floor measures (top-1 agreement with the fp32 student). The fp32 master weights are
saved (safetensors, atomically: temp folder + rename); the builder's round-to-nearest then lands
on the grid the pass trained for. `qat_report.json` in the output folder holds the simulated top-1
agreement with fp32 and KL(fp32 || quantized) on the eval split's answer positions, before and
after the pass. The pass is short (a minute or
two), so it is not checkpointed: a killed pass leaves no output folder and starts again.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from tqdm import tqdm

from edgestill.distill.losses import kl_rows, masked_mean
from edgestill.distill.train import padded, tokenized_prompts
from edgestill.errors import UserError, cli_main
from edgestill.files import read_jsonl
from edgestill.export.smooth import save_checkpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QatSettings:
    bits: int = 4
    block: int = 32
    steps: int = 30
    batch_size: int = 8
    lr: float = 3e-4
    seed: int = 0
    activations: bool = True  # simulate accuracy_level=4's int8 activation rounding
    smooth: bool = False  # smooth the activations first (export/smooth.py), as the int4 preset does
    start: str = "gptq"  # "gptq": from GPTQ's rounding of the smoothed student (export/gptq.py); "weights": its own


def fake_quant_weight(w: torch.Tensor, bits: int, block: int) -> torch.Tensor:
    """w [N, K] rounded as MatMulNBits symmetric does, per block of `block` along K; same shape."""
    n, k = w.shape
    wp = F.pad(w, (0, (-k) % block)).reshape(n, -1, block)
    peak = wp.gather(-1, wp.abs().argmax(-1, keepdim=True))  # signed value of largest magnitude
    scale = peak / -(2 ** (bits - 1))
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    q = torch.clamp(torch.round(wp / scale), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return (q * scale).reshape(n, -1)[:, :k]


def fake_quant_activation(x: torch.Tensor, block: int) -> torch.Tensor:
    """x [..., K] rounded to int8 per block of `block` along K (symmetric, scale max|x|/127)."""
    k = x.shape[-1]
    xp = F.pad(x, (0, (-k) % block))
    xb = xp.reshape(*xp.shape[:-1], -1, block)
    scale = (xb.abs().amax(-1, keepdim=True) / 127).clamp_min(1e-12)
    q = (torch.round(xb / scale).clamp(-127, 127) * scale).reshape(xp.shape)[..., :k]
    return x + (q - x).detach()


class FakeQuantWeight(nn.Module):
    """A parametrization: the forward pass sees the quantized weight, gradients reach the fp32 one."""

    def __init__(self, bits: int, block: int):
        super().__init__()
        self.bits, self.block = bits, block

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w + (fake_quant_weight(w, self.bits, self.block) - w).detach()


def quantized_modules(model) -> list[nn.Module]:
    """The modules whose weights the bundle quantizes: every Linear of the decoder and the LM head,
    plus the embedding when it is tied to the LM head."""
    mods = [m for m in model.modules() if isinstance(m, nn.Linear)]
    emb = model.get_input_embeddings()
    if emb.weight is model.get_output_embeddings().weight:
        mods.append(emb)
    return mods


def attach_fake_quant(model, s: QatSettings) -> list:
    """Parametrize the quantized weights (and hook the matmul inputs); returns the hook handles."""
    handles = []
    for mod in quantized_modules(model):
        parametrize.register_parametrization(mod, "weight", FakeQuantWeight(s.bits, s.block))
        if s.activations and isinstance(mod, nn.Linear):
            handles.append(mod.register_forward_pre_hook(lambda _m, args: (fake_quant_activation(args[0], s.block),)))
    return handles


def detach_fake_quant(model, handles: list) -> None:
    """Back to a plain model holding the fp32 master weights."""
    for h in handles:
        h.remove()
    for mod in [m for m in model.modules() if parametrize.is_parametrized(m, "weight")]:
        parametrize.remove_parametrizations(mod, "weight", leave_parametrized=False)


@dataclass
class Seq:
    ids: list[int]
    n_prompt: int


def load_sequences(data: Path, tokenizer, instruction: str, split: str) -> list[Seq]:
    """Student prompt + the teacher's answer (+ eos when it stopped) for one split of teacher.jsonl."""
    records = [r for r in read_jsonl(data) if r.get("split") == split and r.get("output")]
    prompts = tokenized_prompts(tokenizer, instruction, [r["input"] for r in records])
    out = []
    for r, p in zip(records, prompts):
        answer = tokenizer(r["output"], add_special_tokens=False)["input_ids"]
        answer += [tokenizer.eos_token_id] if r.get("ended") else []
        out.append(Seq(list(p) + answer, len(p)))
    return out


_ALL = torch.tensor(True)  # every category counts (full logits)


def _batch(seqs: list[Seq], pad_id: int) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """(model inputs, rows, cols): right-padded ids/mask and the answer positions, as in training."""
    ids, mask, rows, cols = padded([(s.ids, s.n_prompt) for s in seqs], pad_id)
    return {"input_ids": ids, "attention_mask": mask}, rows, cols


def kl_to_reference(logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over unmasked positions of KL(softmax(ref) || softmax(logits)); logits [B, T, V], mask [B, T]."""
    kl = kl_rows(F.log_softmax(ref_logits.float(), -1), F.log_softmax(logits.float(), -1), _ALL)
    return masked_mean(kl, mask)


class Scorer:
    """Top-1 agreement and mean KL(reference || model) at the positions that predict answer tokens
    of `seqs`; the reference side is computed once, so one Scorer rates many models cheaply."""

    def __init__(self, reference, seqs: list[Seq], pad_id: int, batch: int = 8):
        self.batches = [_batch(seqs[i:i + batch], pad_id) for i in range(0, len(seqs), batch)]
        with torch.no_grad():
            self.ref = [F.log_softmax(reference(**b).logits[r, c].float(), -1) for b, r, c in self.batches]

    @torch.no_grad()
    def __call__(self, model) -> tuple[float, float]:
        same = total = 0
        kl = 0.0
        for (b, r, c), ref in zip(self.batches, self.ref):
            mine = F.log_softmax(model(**b).logits[r, c].float(), -1)  # [N, V]
            same += int((mine.argmax(-1) == ref.argmax(-1)).sum())
            kl += float(kl_rows(ref, mine, _ALL).sum())
            total += len(r)
        return same / max(total, 1), kl / max(total, 1)


def agreement(model, reference, seqs: list[Seq], pad_id: int) -> tuple[float, float]:
    """(top-1 agreement, mean KL(reference || model)) at the positions that predict answer tokens."""
    return Scorer(reference, seqs, pad_id)(model)


def qat_student(student_dir: Path, out_dir: Path, data: Path, instruction: str, s: QatSettings,
                copies=None) -> dict:
    """Run the pass on `student_dir` and write the result to `out_dir`; returns qat_report.json.
    `copies` (export.bundle.CalibratedCopies) shares the GPTQ start with an int4-gptq bundle."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    torch.manual_seed(s.seed)
    tok = AutoTokenizer.from_pretrained(student_dir)
    train, held = (load_sequences(data, tok, instruction, split) for split in ("train", "eval"))
    if not train:
        raise UserError(f"{data}: no train records with an answer; run `edgestill distill RECIPE` first")
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    reference = AutoModelForCausalLM.from_pretrained(student_dir, dtype=torch.float32).eval()
    Path(out_dir).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=Path(out_dir).parent, prefix=f".{Path(out_dir).name}.start-") as work:
        model, start = _start(student_dir, Path(work), data, instruction, s, train, copies)
    handles = attach_fake_quant(model, s)
    model.eval()
    before = agreement(model, reference, held, pad) if held else (None, None)
    losses = _train(model, reference, train, pad, s)
    model.eval()
    after = agreement(model, reference, held, pad) if held else (None, None)
    detach_fake_quant(model, handles)
    from edgestill.export.inputs import source_fingerprint

    report = {"settings": asdict(s), "source": str(student_dir.resolve()), "start": start,
              "source_fingerprint": source_fingerprint(student_dir),
              "simulated_top1_vs_fp32": {"before": _r(before[0]), "after": _r(after[0]), "positions_from": "eval split"},
              "simulated_kl_vs_fp32": {"before": _r(before[1], 6), "after": _r(after[1], 6)},
              "loss": {"first": _r(losses[0]), "last": _r(sum(losses[-5:]) / len(losses[-5:]))},
              "train_sequences": len(train), "seconds": round(time.perf_counter() - t0, 1)}
    save_checkpoint(model, student_dir, out_dir, {"qat_report.json": report})
    log.info("QAT int%d: simulated top-1 vs fp32 %s -> %s in %.0f s", s.bits, report["simulated_top1_vs_fp32"]["before"],
             report["simulated_top1_vs_fp32"]["after"], report["seconds"])
    return report


def _start(student_dir: Path, work: Path, data: Path, instruction: str, s: QatSettings, train: list,
           copies) -> tuple[nn.Module, str | dict]:
    """(the model the pass trains, what it started from). `s.start` "gptq": GPTQ's rounding of the
    smoothed student, made in `work` or taken from `copies` (measured on the default student, int4:
    simulated top-1 vs fp32 0.912 -> 0.915 after 30 steps, against 0.854 -> 0.882 after 60 from the
    student's own weights, the earlier start); "weights": the student's own weights, smoothed if
    `s.smooth`."""
    from transformers import AutoModelForCausalLM

    if s.start == "gptq":
        from edgestill.export.bundle import calibrated_sources
        from edgestill.export.quantize import gptq_preset
        from edgestill.export.smooth import calibration_ids

        ids = calibration_ids(student_dir, data, instruction, [])
        _, rounded, records = calibrated_sources(student_dir, work, gptq_preset(s.bits, s.block), ids, copies)
        model = AutoModelForCausalLM.from_pretrained(rounded, dtype=torch.float32)
        return model, {k: v for k, v in records["gptq_calibration"].items() if k != "rtn_kept_for"}
    if s.start != "weights":
        raise UserError(f"QAT start {s.start!r}: use 'gptq' or 'weights'")
    model = AutoModelForCausalLM.from_pretrained(student_dir, dtype=torch.float32)
    if s.smooth:  # the same function; the bundle is built from these (smoothed, trained) weights
        from edgestill.export.smooth import CALIBRATION_RECORDS, smooth_loaded

        smooth_loaded(model, [q.ids for q in train[:CALIBRATION_RECORDS]])
    return model, "the student's weights" + (", smoothed" if s.smooth else "")


def _r(x, digits: int = 4):
    return None if x is None else round(x, digits)


def _train(model, reference, train: list[Seq], pad: int, s: QatSettings) -> list[float]:
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=0.0)
    warm = max(1, s.steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(i, s.steps) / s.steps)))
    gen = torch.Generator().manual_seed(s.seed)
    order: list[int] = []
    losses = []
    model.train()
    for _ in tqdm(range(s.steps), desc=f"QAT int{s.bits}", unit="step"):
        if len(order) < s.batch_size:
            order += torch.randperm(len(train), generator=gen).tolist()
        batch, _, _ = _batch([train[i] for i in order[: s.batch_size]], pad)
        del order[: s.batch_size]
        with torch.no_grad():
            ref_logits = reference(**batch).logits
        loss = kl_to_reference(model(**batch).logits, ref_logits, batch["attention_mask"])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


def read_report(folder: Path) -> dict | None:
    """qat_report.json of a finished pass, else None."""
    f = Path(folder) / "qat_report.json"
    return json.loads(f.read_text()) if f.is_file() else None


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m edgestill.export.qat", description=__doc__.split("\n")[0])
    p.add_argument("student")
    p.add_argument("out")
    p.add_argument("--data", required=True, help="teacher.jsonl with train/eval splits")
    p.add_argument("--instruction", required=True)
    for f in ("bits", "block", "steps", "batch_size", "seed"):
        p.add_argument(f"--{f.replace('_', '-')}", type=int, default=getattr(QatSettings, f))
    p.add_argument("--lr", type=float, default=QatSettings.lr)
    p.add_argument("--no-activations", action="store_true", help="do not simulate int8 activation rounding")
    p.add_argument("--start", choices=("gptq", "weights"), default=QatSettings.start,
                   help="train from GPTQ's rounding of the smoothed student (default) or from its own weights")
    p.add_argument("--smooth", action="store_true", help="with --start weights: smooth the activations first")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    student = Path(a.student)
    if not (student / "config.json").is_file():
        raise UserError(f"{student}: not a student folder (no config.json)")
    s = QatSettings(a.bits, a.block, a.steps, a.batch_size, a.lr, a.seed, not a.no_activations, a.smooth, a.start)
    print(json.dumps(qat_student(student, Path(a.out), Path(a.data), a.instruction, s), indent=2))
    return 0


if __name__ == "__main__":
    cli_main(main)
