"""Quantization-aware distillation: a short extra pass that makes a student survive its bundle's quantization.

    python -m edgestill.export.qat build/default/student build/default/student-qat-int4 --bits 4 --block 32 \\
        --data build/default/data/teacher.jsonl --instruction "Summarize ..." [--steps 30] [--lr 3e-4] \\
        [--start gptq|weights]

(`edgestill export RECIPE export.precisions=[int4-qat]` runs it for you.)

The pass starts from GPTQ's rounding of the activation-smoothed student (export/gptq.py, on the
same train text; `--start weights`: from the student's own weights). The measurements are in
docs/log.md ("Quantization-aware pass").

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

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from tqdm import tqdm

from edgestill.errors import UserError
from edgestill.export.calibration import ALL, Seq, agreement, batch, load_sequences
from edgestill.export.checkpoint import save_checkpoint
from edgestill.export.fakequant import FakeQuantWeight, fake_quant_activation
from edgestill.export.inputs import source_fingerprint
from edgestill.tensors import kl_rows, masked_mean

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


def kl_to_reference(logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over unmasked positions of KL(softmax(ref) || softmax(logits)); logits [B, T, V], mask [B, T]."""
    kl = kl_rows(F.log_softmax(ref_logits.float(), -1), F.log_softmax(logits.float(), -1), ALL)
    return masked_mean(kl, mask)


def qat_student(student_dir: Path, start_dir: Path, start: str | dict, out_dir: Path, data: Path,
                instruction: str, s: QatSettings) -> dict:
    """Run the pass from the checkpoint `start_dir` (the student, or a calibrated copy of it: what
    `start` describes) against the fp32 student `student_dir`; write the result to `out_dir` and
    return qat_report.json. export/calibrated.py's `qat_pass` chooses the start from `s.start`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    torch.manual_seed(s.seed)
    tok = AutoTokenizer.from_pretrained(student_dir)
    train, held = (load_sequences(data, tok, instruction, split) for split in ("train", "eval"))
    if not train:
        raise UserError(f"{data}: no train records with an answer; run `edgestill distill RECIPE` first")
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    reference = AutoModelForCausalLM.from_pretrained(student_dir, dtype=torch.float32).eval()
    model = AutoModelForCausalLM.from_pretrained(start_dir, dtype=torch.float32)
    handles = attach_fake_quant(model, s)
    model.eval()
    before = agreement(model, reference, held, pad) if held else (None, None)
    losses = _train(model, reference, train, pad, s)
    model.eval()
    after = agreement(model, reference, held, pad) if held else (None, None)
    detach_fake_quant(model, handles)
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
        inputs, _, _ = batch([train[i] for i in order[: s.batch_size]], pad)
        del order[: s.batch_size]
        with torch.no_grad():
            ref_logits = reference(**inputs).logits
        loss = kl_to_reference(model(**inputs).logits, ref_logits, inputs["attention_mask"])
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
