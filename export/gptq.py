"""GPTQ: the student's weights rounded onto the bundle's MatMulNBits grid with second-order error
compensation, calibrated on the task's own text.

    python -m export.gptq build/default/student build/default/student-int4-gptq --bits 4 --block 32 \\
        --data build/default/data/teacher.jsonl --instruction "Summarize ..."

(`python -m export RECIPE export.precisions=[int4-gptq]` runs it for you.)

Round-to-nearest (the builder's RTN) rounds every weight on its own. GPTQ (Frantar et al. 2023)
rounds one input column of a matmul at a time and moves the error it made onto the columns not
yet rounded, weighted by the inverse Hessian H = 2 X X^T of that matmul's inputs X, which it
reads from calibration text: the task's train split (student prompt + teacher answer), as the
other calibrated presets do. Layers are done in order, each on the inputs the already-rounded
layers before it produce. The tied LM head is done first, on the final norm's outputs of the
fp32 model, so that the layers are then calibrated on the rounded embedding rows that the bundle's
lookup reads (the embedding shares the LM head's matrix in our bundles).

The output is an ordinary checkpoint whose weights lie *exactly* on the grid of onnxruntime's
symmetric MatMulNBits quantizer (export/qat.py's `fake_quant_weight`: per block of `block` input
channels, the value of largest magnitude maps to -2^(bits-1)). The block's scale is fixed when
GPTQ reaches the block, from the value of largest magnitude at that moment, and that value is
pinned to the code -2^(bits-1) however the updates move it, so the builder's round-to-nearest
finds the same scale and the same codes: a test checks that rounding the result again changes
nothing. So the bundle is built by the unmodified builder, and onnxruntime-genai runs it.

Why our own code: onnxruntime.quantization's GPTQ config calls Intel Neural Compressor (not a
dependency here, and its ONNX side is deprecated), and it rounds onto its own grid rather than
the builder's. This is about 100 lines on top of torch.

Activation smoothing (export/smooth.py) is applied first when asked, as the RTN presets do.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from edgestill.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GptqSettings:
    bits: int = 4
    block: int = 32
    calibration: int = 64  # train sequences (prompt + teacher answer)
    damp: float = 0.01  # added to H's diagonal, as a fraction of its mean
    lm_head: str = "first"  # GPTQ the (tied) LM head "first" (the layers then see its rows), "last", or "rtn"
    smooth: bool = True  # SmoothQuant the activations first (export/smooth.py)
    seed: int = 0


def gptq_weight(w: torch.Tensor, h: torch.Tensor, bits: int, block: int, damp: float = 0.01) -> torch.Tensor:
    """w [N, K] rounded column by column onto the symmetric MatMulNBits grid (blocks of `block`
    along K), each rounding error spread over the later columns through H^-1; h [K, K] = X X^T of
    the inputs. Returns the rounded weight [N, K] (fp32, exactly on the grid)."""
    w = w.detach().float().clone()
    n, k = w.shape
    h = h.double().clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += torch.eye(k, dtype=h.dtype) * damp * torch.diag(h).mean()
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True).float()
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    q = torch.zeros_like(w)
    rows = torch.arange(n)
    for g0 in range(0, k, block):
        g1 = min(g0 + block, k)
        peak_at = w[:, g0:g1].abs().argmax(1)
        scale = w[rows, g0 + peak_at] / lo
        scale = torch.where(scale == 0, torch.ones_like(scale), scale)
        err = torch.zeros(n, g1 - g0)
        for j in range(g0, g1):
            code = torch.clamp(torch.round(w[:, j] / scale), lo, hi)
            code = torch.where(peak_at == j - g0, torch.full_like(code, lo), code)  # the scale's anchor
            q[:, j] = code * scale
            e = (w[:, j] - q[:, j]) / u[j, j]
            w[:, j:g1] -= e[:, None] * u[j, j:g1][None, :]
            err[:, j - g0] = e
        w[:, g1:] -= err @ u[g0:g1, g1:]
    return q


class _Hessians:
    """X X^T of the inputs of some Linear modules, over the real (unpadded) tokens. Modules that
    read the same tensor (q/k/v, gate/up) share one product: it is computed once per call."""

    def __init__(self, modules: dict[str, nn.Linear]):
        self.h = {name: torch.zeros(m.in_features, m.in_features, dtype=torch.float64) for name, m in modules.items()}
        self.mask: torch.Tensor | None = None
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None  # (input, its X^T X)
        self.handles = [m.register_forward_pre_hook(self._hook(name)) for name, m in modules.items()]

    def _hook(self, name):
        def pre(_m, args):
            x = args[0]
            if self._last is None or self._last[0] is not x:
                rows = x.detach()[self.mask] if self.mask is not None else x.detach().reshape(-1, x.shape[-1])
                self._last = (x, (rows.T @ rows).double())  # fp32 product per batch, summed in fp64
            self.h[name] += self._last[1]
        return pre

    def close(self) -> dict[str, torch.Tensor]:
        for handle in self.handles:
            handle.remove()
        self._last = None
        return self.h


def layer_inputs(model, batches) -> list[list[tuple[tuple, dict]]]:
    """Per batch, the (args, kwargs) each decoder layer is called with, and then the final norm's."""
    out = []
    for batch in batches:
        calls: list[tuple[tuple, dict]] = []
        hooks = [m.register_forward_pre_hook(lambda _m, a, kw: calls.append((a, kw)), with_kwargs=True)
                 for m in (*model.model.layers, model.model.norm)]
        try:
            with torch.no_grad():
                model.model(**batch, use_cache=False)
        finally:
            for h in hooks:
                h.remove()
        out.append(calls)
    return out


def run_layer(layer, hidden, args, kwargs):
    """The hidden states out of decoder `layer` called as it was (args, kwargs), on `hidden`."""
    out = layer(hidden, *args[1:], **kwargs)
    return out[0] if isinstance(out, tuple) else out


@torch.no_grad()
def gptq_model(model, batches: list[dict], s: GptqSettings) -> dict:
    """Round every decoder Linear (and the LM head if asked) of `model` in place; returns per-module
    relative output errors ||(W - Q) X|| / ||W X|| on the calibration tokens, GPTQ vs RTN."""
    from export.qat import fake_quant_weight

    masks = [b["attention_mask"].bool() for b in batches]
    calls = layer_inputs(model, batches)
    errors: dict[str, dict[str, float]] = {}
    if s.lm_head == "first":
        errors["lm_head"] = _head(model, [c[-1][0][0] for c in calls], masks, s)
        calls = layer_inputs(model, batches)  # a tied embedding changed: the layers see its rounded rows
    layers = model.model.layers
    hidden = [c[0][0][0] for c in calls]
    for i, layer in enumerate(tqdm(layers, desc=f"GPTQ int{s.bits}", unit="layer")):
        linears = {f"model.layers.{i}.{n}": m for n, m in layer.named_modules() if isinstance(m, nn.Linear)}
        hs = _Hessians(linears)
        for b, (h, mask) in enumerate(zip(hidden, masks)):
            hs.mask = mask
            run_layer(layer, h, calls[b][i][0], calls[b][i][1])
        for name, mat in hs.close().items():
            errors[name] = _replace(linears[name], mat, s, fake_quant_weight)
        hidden = [run_layer(layer, h, calls[b][i][0], calls[b][i][1]) for b, h in enumerate(hidden)]
    if s.lm_head == "last":
        errors["lm_head"] = _head(model, hidden, masks, s)
    return errors


def _head(model, hidden: list[torch.Tensor], masks: list[torch.Tensor], s: GptqSettings) -> dict[str, float]:
    """GPTQ the LM head on the final norm's outputs of `hidden` (the final norm's inputs)."""
    from export.qat import fake_quant_weight

    head = model.get_output_embeddings()
    hs = _Hessians({"lm_head": head})
    for h, mask in zip(hidden, masks):
        hs.mask = mask
        head(model.model.norm(h))
    return _replace(head, hs.close()["lm_head"], s, fake_quant_weight)


def _replace(lin: nn.Linear, h: torch.Tensor, s: GptqSettings, rtn) -> dict[str, float]:
    """Put GPTQ's rounding of `lin.weight` in place; the relative output error of GPTQ and RTN."""
    w = lin.weight.detach().float().clone()
    q = gptq_weight(w, h, s.bits, s.block, s.damp)
    hf = h.float()

    def rel(d):  # ||d X|| / ||w X||, from tr(d H d^T) / tr(w H w^T)
        return float(((d @ hf) * d).sum() / ((w @ hf) * w).sum().clamp_min(1e-30)) ** 0.5

    errors = {"gptq": round(rel(w - q), 6), "rtn": round(rel(w - rtn(w, s.bits, s.block)), 6)}
    lin.weight.copy_(q.to(lin.weight.dtype))
    return errors


def gptq_student(student_dir: Path, out_dir: Path, data: Path, instruction: str, s: GptqSettings) -> dict:
    """Round `student_dir` with GPTQ and write the checkpoint to `out_dir`; returns gptq_report.json."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from export.inputs import source_fingerprint
    from export.qat import _batch, load_sequences

    t0 = time.perf_counter()
    torch.manual_seed(s.seed)
    tok = AutoTokenizer.from_pretrained(student_dir)
    train = load_sequences(data, tok, instruction, "train")[: s.calibration]
    if not train:
        raise UserError(f"{data}: no train records with an answer to calibrate on; run `python -m distill RECIPE` first")
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    model = AutoModelForCausalLM.from_pretrained(student_dir, dtype=torch.float32).eval()
    if s.smooth:
        from export.smooth import CALIBRATION_RECORDS, smooth_loaded

        smooth_loaded(model, [q.ids for q in train[:CALIBRATION_RECORDS]])
    batches = [_batch(train[i:i + 8], pad)[0] for i in range(0, len(train), 8)]
    errors = gptq_model(model, batches, s)
    gain = [e["rtn"] / max(e["gptq"], 1e-12) for e in errors.values()]
    report = {"settings": asdict(s), "source": str(student_dir.resolve()),
              "source_fingerprint": source_fingerprint(student_dir), "calibration_sequences": len(train),
              "relative_output_error": errors,
              "median_rtn_over_gptq_error": round(sorted(gain)[len(gain) // 2], 3),
              "seconds": round(time.perf_counter() - t0, 1)}
    from export.qat import _save

    _save(model, tok, student_dir, out_dir, report, "gptq_report.json")
    log.info("GPTQ int%d: %d matmuls, median output error %.2fx lower than RTN, %.0f s", s.bits, len(errors),
             report["median_rtn_over_gptq_error"], report["seconds"])
    return report


def read_report(folder: Path) -> dict | None:
    """gptq_report.json of a finished pass, else None."""
    from export.qat import read_report as read

    return read(folder, "gptq_report.json")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m export.gptq", description=__doc__.split("\n")[0])
    p.add_argument("student")
    p.add_argument("out")
    p.add_argument("--data", required=True, help="teacher.jsonl with a train split")
    p.add_argument("--instruction", required=True)
    for f in ("bits", "block", "calibration", "seed"):
        p.add_argument(f"--{f}", type=int, default=getattr(GptqSettings, f))
    p.add_argument("--damp", type=float, default=GptqSettings.damp)
    p.add_argument("--lm-head", choices=("last", "first", "rtn"), default=GptqSettings.lm_head,
                   help="GPTQ the LM head after the layers (default), before them, or leave it to RTN")
    p.add_argument("--no-smooth", action="store_true", help="do not smooth the activations first")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    student = Path(a.student)
    if not (student / "config.json").is_file():
        raise UserError(f"{student}: not a student folder (no config.json)")
    s = GptqSettings(a.bits, a.block, a.calibration, a.damp, a.lm_head, not a.no_smooth, a.seed)
    print(json.dumps({k: v for k, v in gptq_student(student, Path(a.out), Path(a.data), a.instruction, s).items()
                      if k != "relative_output_error"}, indent=2))
    return 0


if __name__ == "__main__":
    from edgestill.errors import cli_main

    cli_main(main)
