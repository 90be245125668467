"""The bundle's quantisation simulated in PyTorch, bit-exact with onnxruntime's MatMulNBits.

- `fake_quant_weight(w, bits, block)`: weights rounded per block of `block` input channels,
  symmetric; the value of largest magnitude in a block maps to -2^(bits-1), as onnxruntime's
  quantizer does (a test checks it against `quantize_matmul_4bits/_8bits`);
- `fake_quant_activation(x, block)`: matmul inputs rounded to int8 per block (what
  `accuracy_level=4` does on the CPU), gradients passed straight through;
- `FakeQuantWeight`: a parametrization that shows the forward pass the rounded weight.

A building block of export/: smooth, gptq, qat and mixed use it; it imports none of them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
