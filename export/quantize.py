"""Precision presets: how each bundle precision is built, named, documented and judged.

A preset is a stable name usable in a recipe's `export.precisions`. Each says what the
builder (onnxruntime-genai's model builder) quantizes, how the embedding / LM head are handled,
and the quality floor it must reach: `top1_agreement_vs_fp32` on held-out teacher text
(export/quality.py). A bundle below its floor is written, marked failing in manifest.json
(`quality_floor.passed: false`) and makes `edgestill export` exit non-zero.

Every quantized preset is weight-only (`MatMulNBits`, symmetric round-to-nearest unless said
otherwise): activations and the KV cache stay fp32. `accuracy_level=4` lets onnxruntime's CPU
kernel quantize activations to int8 per block and use integer dot products; it is what makes
MatMulNBits fast on x86 and ARM64 alike (level 1, fp32 activations, is many times slower). The
activation rounding it adds is half of the int8 presets' loss, so the int8 presets first smooth
the activations (export/smooth.py, SmoothQuant: input outliers moved into the weights, calibrated
on the task's train text; the fp32 function is unchanged). Measured quality and size per preset:
export/README.md; the experiments behind them: docs/log.md ("Export").

- fp32: the reference; tied embeddings stay one shared matrix. Floor 0.99.
- fp16: every weight, activation and the KV cache in fp16 (the builder's fp16 CPU graph, whose
  shape annotations export/onnx_build.py drops so onnxruntime can run it), 50% of the fp32 bytes.
  Where onnxruntime has no fp16 arithmetic (x86, Cortex-A72) it runs through fp32 casts; with fp16
  arithmetic (Cortex-A76) its quality depends on the device: check it there (export/arm64.py).
  Floor 0.99.
- int8 (the default): activation smoothing, then GPTQ (export/gptq.py: calibrated on the task's
  train text, rounded exactly onto the builder's grid), every MatMul incl. the LM head in 8 bits,
  block 32; for tied models the embedding lookup reads the LM head's int8 matrix
  (export/tie_embedding.py, GatherBlockQuantized bits=8). Floor 0.98.
- int8-b16: the int8 preset before GPTQ: activation smoothing, round-to-nearest, block 16.
  Floor 0.98.
- int8-b32: as int8-b16 with block 32 (the builder's default). Floor 0.98.
- int4: activation smoothing, then every MatMul in 4 bits (RTN, block 32); the tied embedding
  shares the LM head's 4-bit matrix (the builder emits GatherBlockQuantized itself). Floor 0.95.
- int4-b64: as int4 with block 64 (smaller scales table, less accurate). Floor 0.95.
- int4-kquant: k-quant (llama.cpp-style per-block scale search) instead of RTN, block 32, not
  smoothed. Floor 0.95.
- int4-kquant-mixed: k-quant with the LM head and the most sensitive layers (llama.cpp's "mixed"
  selection: first/last eighth of layers and every third qkv/v/down projection) in 8 bits, not
  smoothed. Floor 0.95.
- int4-mixed: int4 (block 32, not smoothed: smoothing before the plan lowered its quality) except
  the matmuls whose int8 (block 32) version lowers the KL to fp32 most per extra byte on the task's
  own train text, up to 25% of the fp32 model's bytes (export/mixed.py; the chosen nodes and every
  node's gain are in the manifest). Floor 0.95.
- int4-qat: as int4, built from the student after a short quantization-aware distillation pass
  (export/qat.py: fake-quant weights on the exact MatMulNBits grid + int8 activation rounding, KL
  to the fp32 student) that starts from int4-gptq's rounding; quality is still measured against
  the fp32 student. Floor 0.95. There is no int8-qat: the pass does not remove the int8 presets'
  activation-rounding loss.
- int4-gptq: activation smoothing, then GPTQ on the task's train text, every MatMul in 4 bits
  (block 32), the LM head first. Floor 0.95.
- int4-gptq-mixed: int4-mixed's plan on top of int4-gptq (the fine side is int8-b32 of the same
  smoothed copy, so spliced nodes share every other weight), 25% byte budget. Floor 0.95.

x86 and ARM64 get the same presets. `python -m edgestill.export.arm64` scores the bundles on
emulated ARM64 cores (export/README.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

SMOOTH_ALPHA = 0.5  # activation smoothing strength (docs/log.md has the measurements)
SMOOTH_RECORD = f"SmoothQuant alpha {SMOOTH_ALPHA} on the task's train text (export/smooth.py)"


@dataclass(frozen=True)
class Preset:
    precision: str  # the stable name (recipe export.precisions, bundle-<name>/)
    builder_precision: str  # the builder's --precision
    builder_options: dict = field(default_factory=dict)  # the builder's --extra_options
    quantization: dict | None = None  # what manifest.json records
    tie_int8_embedding: bool = False  # run export.tie_embedding after the builder
    floor: float = 0.98  # minimum top1_agreement_vs_fp32 on held-out teacher text
    qat: bool = False  # built from the student after a quantization-aware pass (export/qat.py)
    mixed: tuple[str, str, float] | None = None  # (coarse preset, fine preset, byte budget vs fp32): export/mixed.py
    smooth: bool = False  # built from an activation-smoothed copy of the model (export/smooth.py)
    gptq: bool = False  # built from the student rounded by GPTQ on the task's train text (export/gptq.py)

    @property
    def bits(self) -> int:
        return int(self.builder_precision.removeprefix("int").removeprefix("fp"))

    @property
    def block(self) -> int:
        return int(self.builder_options.get("block_size", 0))

    def extra_options(self) -> list[str]:
        return [f"{k}={v}" for k, v in self.builder_options.items()]


def _nbits(name: str, bits: int, block: int, floor: float, algo: str = "rtn", qat: bool = False,
           smooth: bool = False, gptq: bool = False, **options) -> Preset:
    builder = {"accuracy_level": 4, "block_size": block, **options}
    if algo == "rtn" or gptq:
        builder["is_symmetric"] = "true"
    else:
        builder["algo_config"] = algo
    record = {"method": "matmulnbits", "bits": bits, "block_size": block, "accuracy_level": 4,
              "symmetric": algo == "rtn" or gptq, "algorithm": "gptq" if gptq else algo, "lm_head": f"int{bits}",
              "embedding": "int4 (tied to lm_head)" if bits == 4 else "fp32"}
    if algo == "k_quant_mixed":  # the builder's fixed llama.cpp-style choice
        record["lm_head"] = "int8"
        record["mixed_int8"] = "lm_head, first/last eighth of layers, every third qkv/v/down_proj"
    if qat:
        record["qat"] = ("quantization-aware distillation pass before export, started from GPTQ's rounding "
                         "of the smoothed student (export/qat.py)")
        record["activation_smoothing"] = f"{SMOOTH_RECORD}, before GPTQ and the pass"
    if smooth:
        record["activation_smoothing"] = SMOOTH_RECORD
    return Preset(name, f"int{bits}", builder, record, tie_int8_embedding=bits == 8, floor=floor, qat=qat,
                  smooth=smooth, gptq=gptq)


def _mixed(name: str, coarse: str, fine: str, budget: float, floor: float) -> Preset:
    smoothed = "smoothed, then GPTQ" if coarse.endswith("-gptq") else "unsmoothed"
    record = {"method": "matmulnbits-mixed", "coarse_preset": f"{coarse} ({smoothed})",
              "fine_preset": f"{fine} ({smoothed.removesuffix(', then GPTQ')})", "budget_fraction_of_fp32": budget, "accuracy_level": 4,
              "chosen_by": "KL sensitivity of each matmul on the task's train split (export/mixed.py)"}
    bits = 8 if coarse.startswith("int8") else 4
    return Preset(name, f"int{bits}", quantization=record, floor=floor, mixed=(coarse, fine, budget))


PRESETS = {
    "fp32": Preset("fp32", "fp32", floor=0.99),
    "fp16": Preset("fp16", "fp16", quantization={"method": "fp16", "weights": "fp16", "activations": "fp16",
                                                  "kv_cache": "fp16", "lm_head": "fp16", "embedding": "fp16"},
                   floor=0.99),
    "int8": _nbits("int8", 8, 32, 0.98, smooth=True, gptq=True),
    "int8-b16": _nbits("int8-b16", 8, 16, 0.98, smooth=True),
    "int8-b32": _nbits("int8-b32", 8, 32, 0.98, smooth=True),
    "int4": _nbits("int4", 4, 32, 0.95, smooth=True),
    "int4-b64": _nbits("int4-b64", 4, 64, 0.95, smooth=True),
    "int4-kquant": _nbits("int4-kquant", 4, 32, 0.95, algo="k_quant"),
    "int4-kquant-mixed": _nbits("int4-kquant-mixed", 4, 32, 0.95, algo="k_quant_mixed"),
    "int4-mixed": _mixed("int4-mixed", "int4", "int8-b32", 0.25, 0.95),  # unsmoothed: see the docstring
    "int4-qat": _nbits("int4-qat", 4, 32, 0.95, qat=True),
    "int4-gptq": _nbits("int4-gptq", 4, 32, 0.95, smooth=True, gptq=True),
    "int4-gptq-mixed": _mixed("int4-gptq-mixed", "int4-gptq", "int8-b32", 0.25, 0.95),
}


def gptq_preset(bits: int, block: int) -> Preset:
    """The smoothed GPTQ rounding at `bits` and `block` (int4-gptq's settings at any size), e.g. the
    start of a quantization-aware pass."""
    return _nbits(f"int{bits}-gptq-b{block}", bits, block, 0.95 if bits == 4 else 0.98, smooth=True, gptq=True)


def unsmoothed(chosen: Preset) -> Preset:
    """`chosen` built from the model's own weights (no activation smoothing)."""
    if not chosen.smooth:
        return chosen
    from dataclasses import replace

    record = {k: v for k, v in (chosen.quantization or {}).items() if k != "activation_smoothing"}
    return replace(chosen, smooth=False, quantization=record)


def with_budget(chosen: Preset, budget: float | None) -> Preset:
    """A mixed preset with another byte budget (recipe export.mixed_budget); other presets unchanged."""
    if not chosen.mixed or budget is None:
        return chosen
    from dataclasses import replace

    return replace(chosen, mixed=(*chosen.mixed[:2], budget),
                   quantization={**chosen.quantization, "budget_fraction_of_fp32": budget})


def preset(precision: str) -> Preset:
    """The preset for `precision` (one of PRESETS)."""
    if precision not in PRESETS:
        raise ValueError(f"unknown precision {precision!r}; presets: {', '.join(PRESETS)}")
    return PRESETS[precision]
