"""GPTQ: the student's weights rounded onto the bundle's MatMulNBits grid with second-order error
compensation, calibrated on the task's own text.

    python -m edgestill.export.gptq build/default/student /tmp/student-gptq --bits 4 --block 32 \\
        --data build/default/data/teacher.jsonl --instruction "Summarize ..."

(`edgestill export RECIPE` runs it, in a temp folder, for the presets that say so: int8,
int4-gptq, int4-gptq-mixed; export/quantize.py.)

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

Why our own code: onnxruntime.quantization's GPTQ needs Intel Neural Compressor and rounds onto
its own grid, not the builder's.

The presets smooth the activations first (export/smooth.py) and round the smoothed copy, on the
same calibration sequences.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from edgestill.errors import UserError
from edgestill.export.calibration import Seq, batch, layer_inputs, run_layer
from edgestill.export.checkpoint import save_checkpoint
from edgestill.export.fakequant import fake_quant_weight

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GptqSettings:
    bits: int = 4
    block: int = 32
    damp: float = 0.01  # added to H's diagonal, as a fraction of its mean
    lm_head: str = "first"  # GPTQ the (tied) LM head "first" (the layers then see its rows), "last", or "rtn"
    tied_weight_error: float = 2.0  # a tied head's ||W - Q|| may be at most this times RTN's (see _head)


def gptq_weight(w: torch.Tensor, h: torch.Tensor, bits: int, block: int, damp: float = 0.01) -> torch.Tensor:
    """w [N, K] rounded column by column onto the symmetric MatMulNBits grid (blocks of `block`
    along K), each rounding error spread over the later columns through H^-1; h [K, K] = X X^T of
    the inputs. Returns the rounded weight [N, K] (fp32, exactly on the grid).

    Rows are independent (each has its own scales and error feedback), so matmuls that read the
    same input may be rounded as one matrix of stacked rows (gptq_model does, for q/k/v and
    gate/up; the result is bit-identical). The work runs on the transpose, whose columns are then
    contiguous rows (faster, same codes bit for bit)."""
    wt = w.detach().float().t().contiguous()  # [K, N]: column j of w is row j here
    k, n = wt.shape
    h = h.double().clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    wt[dead] = 0.0
    h += torch.eye(k, dtype=h.dtype) * damp * torch.diag(h).mean()
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True).float()
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    qt = torch.empty_like(wt)
    cols = torch.arange(n)
    lowest = torch.full((n,), float(lo))
    for g0 in range(0, k, block):
        g1 = min(g0 + block, k)
        peak_at = wt[g0:g1].abs().argmax(0)
        scale = wt[g0 + peak_at, cols] / lo
        scale = torch.where(scale == 0, torch.ones_like(scale), scale)
        err = torch.empty(g1 - g0, n)
        for j in range(g0, g1):
            code = torch.clamp(torch.round(wt[j] / scale), lo, hi)
            code = torch.where(peak_at == j - g0, lowest, code)  # the scale's anchor
            torch.mul(code, scale, out=qt[j])
            e = (wt[j] - qt[j]) / u[j, j]
            wt[j:g1] -= u[j, j:g1, None] * e[None, :]
            err[j - g0] = e
        wt[g1:] -= u[g0:g1, g1:].t() @ err
    return qt.t().contiguous()


class _Hessians:
    """X X^T of the inputs of some Linear modules, over the real (unpadded) tokens. Modules that
    read the same tensor (q/k/v, gate/up) share one product: it is computed once per call, and
    `groups()` names them so that GPTQ rounds their stacked rows in one pass."""

    def __init__(self, modules: dict[str, nn.Linear]):
        self.h = {name: torch.zeros(m.in_features, m.in_features, dtype=torch.float64) for name, m in modules.items()}
        self.mask: torch.Tensor | None = None
        self._last: tuple[torch.Tensor, torch.Tensor, str] | None = None  # (input, its X^T X, first reader)
        self.leader: dict[str, str] = {}  # module -> the first module that read the same input
        self.handles = [m.register_forward_pre_hook(self._hook(name)) for name, m in modules.items()]

    def _hook(self, name):
        def pre(_m, args):
            x = args[0]
            if self._last is None or self._last[0] is not x:
                rows = x.detach()[self.mask] if self.mask is not None else x.detach().reshape(-1, x.shape[-1])
                self._last = (x, (rows.T @ rows).double(), name)  # fp32 product per batch, summed in fp64
            self.h[name] += self._last[1]
            self.leader.setdefault(name, self._last[2])
        return pre

    def groups(self) -> list[list[str]]:
        """The modules, grouped by the input they read (in the order they were called; a module
        never called is a group of its own)."""
        out: dict[str, list[str]] = {}
        for name in self.h:
            leader = self.leader.get(name, name)
            out.setdefault(leader, []).append(name)
        return list(out.values())

    def close(self) -> dict[str, torch.Tensor]:
        for handle in self.handles:
            handle.remove()
        self._last = None
        return self.h


@torch.no_grad()
def gptq_model(model, batches: list[dict], s: GptqSettings) -> dict:
    """Round every decoder Linear (and the LM head if asked) of `model` in place; returns per-module
    relative output errors ||(W - Q) X|| / ||W X|| on the calibration tokens, GPTQ vs RTN."""
    masks = [b["attention_mask"].bool() for b in batches]
    calls = layer_inputs(model, batches)
    errors: dict[str, dict[str, float]] = {}
    if s.lm_head == "first":
        errors["lm_head"] = _head(model, [c[-1][0][0] for c in calls], masks, s)
        # a tied embedding changed: the layers see its rounded rows (only layer 0's input differs)
        for c, first in zip(calls, layer_inputs(model, batches, first_only=True)):
            c[0] = first[0]
    layers = model.model.layers
    hidden = [c[0][0][0] for c in calls]
    for i, layer in enumerate(tqdm(layers, desc=f"GPTQ int{s.bits}", unit="layer")):
        linears = {f"model.layers.{i}.{n}": m for n, m in layer.named_modules() if isinstance(m, nn.Linear)}
        hs = _Hessians(linears)
        for b, (h, mask) in enumerate(zip(hidden, masks)):
            hs.mask = mask
            run_layer(layer, h, calls[b][i][0], calls[b][i][1])
        hessians = hs.close()
        for names in hs.groups():  # q/k/v and gate/up share H: their stacked rows are rounded at once
            h = hessians[names[0]]
            stacked = gptq_weight(torch.cat([linears[n].weight for n in names]), h, s.bits, s.block, s.damp)
            for name, q in zip(names, stacked.split([linears[n].out_features for n in names])):
                errors[name] = _replace(linears[name], h, s, fake_quant_weight, q=q)
        hidden = [run_layer(layer, h, calls[b][i][0], calls[b][i][1]) for b, h in enumerate(hidden)]
    if s.lm_head == "last":
        errors["lm_head"] = _head(model, hidden, masks, s)
    return errors


def _head(model, hidden: list[torch.Tensor], masks: list[torch.Tensor], s: GptqSettings) -> dict:
    """GPTQ the LM head on the final norm's outputs of `hidden` (the final norm's inputs).

    A head tied to the embedding is also the embedding's rows, which feed the residual stream in
    directions the head's inputs may barely use, and GPTQ moves rounding error into exactly such
    directions. So for a tied head the damping (a ridge towards plain weight error) is raised 10x
    at a time until ||W - Q|| is within `tied_weight_error` times RTN's, else RTN is kept.

    Returns `_replace`'s record (both relative output errors, which was kept), with the damping
    used when a tied head keeps GPTQ."""

    head, embed = model.get_output_embeddings(), model.get_input_embeddings()
    hs = _Hessians({"lm_head": head})
    for h, mask in zip(hidden, masks):
        hs.mask = mask
        head(model.model.norm(h))
    h = hs.close()["lm_head"]
    if embed is None or head.weight is not embed.weight:
        return _replace(head, h, s, fake_quant_weight)
    w = head.weight.detach().float()
    limit = s.tied_weight_error * float((w - fake_quant_weight(w, s.bits, s.block)).norm())
    for damp in (s.damp * 10 ** i for i in range(4)):
        q = gptq_weight(w, h, s.bits, s.block, damp)
        if float((w - q).norm()) <= limit:
            return {**_replace(head, h, s, fake_quant_weight, q=q), "damp": damp}
    return _replace(head, h, s, fake_quant_weight, force_rtn=True)


def _replace(lin: nn.Linear, h: torch.Tensor, s: GptqSettings, rtn, force_rtn: bool = False,
             q: torch.Tensor | None = None) -> dict:
    """Put GPTQ's rounding of `lin.weight` (`q` when already computed) in place, or RTN's where
    GPTQ's output error on the calibration inputs is not lower (or `force_rtn`); returns both
    relative output errors and which was kept."""
    w = lin.weight.detach().float().clone()
    q = gptq_weight(w, h, s.bits, s.block, s.damp) if q is None else q
    r = rtn(w, s.bits, s.block)
    hf = h.float()

    def rel(d):  # ||d X|| / ||w X||, from tr(d H d^T) / tr(w H w^T)
        return float(((d @ hf) * d).sum() / ((w @ hf) * w).sum().clamp_min(1e-30)) ** 0.5

    errors = {"gptq": round(rel(w - q), 6), "rtn": round(rel(w - r), 6)}
    # With too little calibration text H is ill-conditioned: the error feedback can push later
    # columns past the grid's range, clipping cascades and GPTQ ends worse than RTN. RTN is kept then.
    kept = "gptq" if errors["gptq"] < errors["rtn"] and not force_rtn else "rtn"
    lin.weight.copy_((q if kept == "gptq" else r).to(lin.weight.dtype))
    return {**errors, "kept": kept}


def gptq_checkpoint(model_dir: Path, out_dir: Path, ids: list[list[int]], s: GptqSettings) -> dict:
    """Round `model_dir` with GPTQ calibrated on the token sequences `ids` and write the checkpoint
    (safetensors + the folder's config/tokenizer files) to `out_dir`; returns the record for the
    manifest (per-matmul output errors, GPTQ and RTN)."""
    from transformers import AutoModelForCausalLM

    if not ids:
        raise UserError(f"{model_dir}: GPTQ needs calibration text; run `edgestill distill RECIPE` first")
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    cfg = model.generation_config
    pad = next((i for i in (cfg.pad_token_id, cfg.eos_token_id, 0) if isinstance(i, int)), 0)
    seqs = [Seq(list(x), 0) for x in ids]
    errors = gptq_model(model, [batch(seqs[i:i + 8], pad)[0] for i in range(0, len(seqs), 8)], s)
    gain = sorted(e["rtn"] / max(e["gptq"], 1e-12) for e in errors.values())
    fallback = sorted(name for name, e in errors.items() if e["kept"] == "rtn")
    save_checkpoint(model, model_dir, out_dir)
    record = {"method": "GPTQ onto the MatMulNBits grid (export/gptq.py)", **asdict(s),
              "calibration_sequences": len(ids), "calibration_tokens": sum(map(len, ids)),
              "median_rtn_over_gptq_output_error": round(gain[len(gain) // 2], 3), "rtn_kept_for": fallback,
              "relative_output_error": errors, "seconds": round(time.perf_counter() - t0, 1)}
    log.info("GPTQ int%d: %d matmuls, median output error %.2fx lower than RTN, RTN kept for %d, %.0f s", s.bits,
             len(errors), record["median_rtn_over_gptq_output_error"], len(fallback), record["seconds"])
    return record
