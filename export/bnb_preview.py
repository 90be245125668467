"""The PyTorch side of quantization: the student under bitsandbytes int8 / nf4, before any export.

    edgestill export RECIPE export.bitsandbytes=[int8,nf4]     # adds "pytorch_bitsandbytes" to export_summary.json

Loads the student folder with transformers' bitsandbytes integration (the same config as
`teacher.load_in`: LLM.int8 or NF4 with fp32 compute, CPU) and scores it as the bundles are
scored: top-1 agreement with the fp32 student and KL(fp32 || quantized) at the eval split's answer
positions (export/calibration.py's `agreement`). It answers "how much does plain PyTorch quantization cost
this student?" next to what our ONNX presets cost.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from edgestill.export.calibration import agreement, load_sequences
from edgestill.tensors import bitsandbytes_config

log = logging.getLogger(__name__)


def bitsandbytes_quality(student_dir: Path, data: Path, instruction: str, modes: list[str]) -> dict:
    """{mode: {top1_agreement_vs_fp32, kl_vs_fp32, positions, seconds}} for each of `modes` (int8, nf4)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(student_dir)
    held = load_sequences(data, tok, instruction, "eval")
    if not held:
        return {}
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    reference = AutoModelForCausalLM.from_pretrained(student_dir, dtype=torch.float32).eval()
    out = {}
    for mode in modes:
        t0 = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(student_dir, quantization_config=bitsandbytes_config(mode),
                                                     device_map="cpu").eval()
        top1, kl = agreement(model, reference, held, pad)
        out[mode] = {"top1_agreement_vs_fp32": round(top1, 4), "kl_vs_fp32": round(kl, 6),
                     "weights_bytes": int(model.get_memory_footprint()),
                     "positions": sum(len(s.ids) - s.n_prompt for s in held),
                     "seconds": round(time.perf_counter() - t0, 1)}
        log.info("bitsandbytes %s student: top-1 vs fp32 %.3f", mode, top1)
    return out
