"""Activation smoothing for the int8 and RTN int4 presets (SmoothQuant): input outliers into the weights.

    from edgestill.export.smooth import smooth_checkpoint, calibration_ids
    ids = calibration_ids(student_dir, "build/default/data/teacher.jsonl", instruction, fallback_texts)
    record = smooth_checkpoint(student_dir, out_dir, ids)     # out_dir: an equivalent HF checkpoint

(`edgestill export RECIPE` runs it for the presets that say so: export/quantize.py.)

With `accuracy_level=4`, onnxruntime's MatMulNBits rounds every matmul input to int8 per block of
16 (or 32) channels. A few channels of large magnitude set their block's scale and crush the other
channels of that block; this activation rounding is half of the int8 presets' loss. For every
group of matmuls that read the same input, a per-channel scale

    s = amax_x ** alpha / amax_w ** (1 - alpha)        (alpha 0.5, Xiao et al. 2023, "SmoothQuant")

divides the input and multiplies the weights' input columns, so X @ W.T is unchanged. amax_x is
the largest |input| of the channel on the task's own text (prompt + teacher answer of up to 64
train records), amax_w the largest |weight| of that input column over the group. The division is
folded into whatever makes the input, so the fp32 model computes the same function (to float
rounding) and the graph is unchanged:

- q/k/v_proj read input_layernorm: its weight is divided by s;
- gate/up_proj read post_attention_layernorm: its weight is divided by s;
- down_proj reads silu(gate) * up: up_proj's output rows are divided by s;
- o_proj reads the attention output, a mix of v_proj rows: v_proj's rows (and bias) are divided
  by s, one scale per key/value channel shared by the query heads that read it.

The LM head is left alone: it is tied to the embedding, whose rows feed the residual stream.
The choice of alpha and its measurements are in docs/log.md ("Activation smoothing").
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from edgestill.export.checkpoint import save_checkpoint
from edgestill.export.quantize import SMOOTH_ALPHA as ALPHA

log = logging.getLogger(__name__)


def supports(model) -> bool:
    """Whether `model` has the Llama-style layout this pass knows (separate q/k/v, gate/up/down)."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not layers:
        return False
    a, m = getattr(layers[0], "self_attn", None), getattr(layers[0], "mlp", None)
    names = ("q_proj", "k_proj", "v_proj", "o_proj")
    return (all(hasattr(a, n) for n in names) and all(hasattr(m, n) for n in ("gate_proj", "up_proj", "down_proj"))
            and hasattr(layers[0], "input_layernorm") and hasattr(layers[0], "post_attention_layernorm"))


@torch.no_grad()
def input_amax(model, ids: list[list[int]]) -> dict[str, torch.Tensor]:
    """{Linear name: max |input| per input channel [K]} over the sequences `ids`, one at a time."""
    amax, hooks = {}, []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            def hook(_m, args, name=name):
                x = args[0].detach().reshape(-1, args[0].shape[-1]).abs().amax(0)
                amax[name] = torch.maximum(amax[name], x) if name in amax else x
            hooks.append(mod.register_forward_pre_hook(hook))
    try:
        for seq in ids:
            model(input_ids=torch.tensor([seq]))
    finally:
        for h in hooks:
            h.remove()
    return amax


def channel_scales(x_amax: torch.Tensor, weights: list[torch.Tensor], alpha: float) -> torch.Tensor:
    """s [K] = amax_x^alpha / amax_w^(1-alpha); weights: [N_i, K] matrices reading the same input."""
    return _balance(x_amax, torch.stack([w.abs().amax(0) for w in weights]).amax(0), alpha)


def _balance(x_amax: torch.Tensor, w_amax: torch.Tensor, alpha: float) -> torch.Tensor:
    return x_amax.clamp_min(1e-5) ** alpha / w_amax.clamp_min(1e-5) ** (1 - alpha)


@torch.no_grad()
def smooth_model(model, amax: dict[str, torch.Tensor], alpha: float = ALPHA) -> int:
    """Fold smoothing scales into `model` in place (see the module docstring); returns the groups."""
    cfg = model.config
    heads, kv = cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    groups = 0
    for i, layer in enumerate(model.model.layers):
        at, mlp, p = layer.self_attn, layer.mlp, f"model.layers.{i}."
        s = channel_scales(amax[p + "self_attn.q_proj"], [at.q_proj.weight, at.k_proj.weight, at.v_proj.weight], alpha)
        layer.input_layernorm.weight.div_(s)
        for lin in (at.q_proj, at.k_proj, at.v_proj):
            lin.weight.mul_(s)
        s = channel_scales(amax[p + "mlp.gate_proj"], [mlp.gate_proj.weight, mlp.up_proj.weight], alpha)
        layer.post_attention_layernorm.weight.div_(s)
        for lin in (mlp.gate_proj, mlp.up_proj):
            lin.weight.mul_(s)
        s = channel_scales(amax[p + "mlp.down_proj"], [mlp.down_proj.weight], alpha)
        _scale_rows(mlp.up_proj, 1 / s)
        mlp.down_proj.weight.mul_(s)
        # o_proj input channel h*head_dim+d is v channel (h // (heads/kv))*head_dim+d: one scale per v channel
        per_kv = heads // kv
        x = amax[p + "self_attn.o_proj"].reshape(kv, per_kv, head_dim).amax(1)
        w = at.o_proj.weight.abs().amax(0).reshape(kv, per_kv, head_dim).amax(1)
        s_kv = _balance(x, w, alpha)
        _scale_rows(at.v_proj, 1 / s_kv.reshape(-1))
        at.o_proj.weight.mul_(s_kv[:, None, :].expand(-1, per_kv, -1).reshape(-1))
        groups += 4
    return groups


def _scale_rows(lin: nn.Linear, factor: torch.Tensor) -> None:
    lin.weight.mul_(factor[:, None])
    if lin.bias is not None:
        lin.bias.mul_(factor)


def smooth_loaded(model, ids: list[list[int]], alpha: float = ALPHA) -> int | None:
    """Calibrate on `ids` and smooth `model` in place; the groups smoothed, or None (model
    unchanged) for an architecture this pass does not know."""
    if not ids:
        raise ValueError("activation smoothing needs calibration text (train records or validation texts)")
    if not supports(model):
        log.info("activation smoothing skipped: %s has no Llama-style q/k/v and gate/up/down", type(model).__name__)
        return None
    return smooth_model(model, input_amax(model, ids), alpha)


def smooth_checkpoint(model_dir: Path, out_dir: Path, ids: list[list[int]], alpha: float = ALPHA) -> dict | None:
    """Write the smoothed, equivalent checkpoint of `model_dir` to `out_dir` (safetensors + its
    config and tokenizer files); return the manifest record, or None (nothing written) for an
    architecture this pass does not know."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    if (groups := smooth_loaded(model, ids, alpha)) is None:
        return None
    save_checkpoint(model, model_dir, out_dir)
    return {"method": "SmoothQuant (export/smooth.py)", "alpha": alpha, "groups": groups,
            "calibration_sequences": len(ids), "calibration_tokens": sum(map(len, ids))}
