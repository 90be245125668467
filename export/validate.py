"""Export ends in validation: run the bundle (through the runtime) and PyTorch on real text.

For every validation text, both see the same prompt token ids (the bundle's template and
instruction). Recorded: the largest absolute logit difference over all prompt positions, the
top-1 agreement of the bundle with the fp32 PyTorch model over those positions, and whether 64
greedy tokens (eos ignored) are identical. An fp32 bundle must match within
`FP32_LOGIT_TOLERANCE` and generate the same greedy tokens, else `ValidationError`; quantized
bundles record their numbers and are judged by their quality floor (export/quality.py).

`Reference` holds the fp32 PyTorch model of one folder and caches its results by token ids, so
the presets of one student share one PyTorch pass.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgestill.errors import UserError
from edgestill.runtime import Bundle, Generator

FP32_LOGIT_TOLERANCE = 1e-3
GREEDY_TOKENS = 64


class ValidationError(UserError):
    """The exported model does not reproduce PyTorch within tolerance; nothing was written."""


def load_torch_model(model_dir: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


@torch.no_grad()
def torch_logits(model, ids: list[int]) -> np.ndarray:
    """Logits [len(ids), vocab] of the PyTorch model for one sequence."""
    return model(input_ids=torch.tensor([ids])).logits[0].float().numpy()


@torch.no_grad()
def torch_greedy(model, ids: list[int], n: int) -> list[int]:
    """`n` greedy tokens after `ids`, eos ignored, with the model's KV cache."""
    out = model(input_ids=torch.tensor([ids]), use_cache=True)
    tokens = []
    for _ in range(n):
        token = int(out.logits[0, -1].argmax())
        tokens.append(token)
        out = model(input_ids=torch.tensor([[token]]), past_key_values=out.past_key_values, use_cache=True)
    return tokens


class Reference:
    """The fp32 PyTorch model of `model_dir`, its logits/greedy tokens/top-1 cached by token ids."""

    def __init__(self, model_dir: Path):
        self.model = load_torch_model(model_dir)
        self.params = sum(p.numel() for p in self.model.parameters())
        self._cache: dict[tuple, object] = {}

    def _get(self, key: tuple, compute):
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def logits(self, ids: list[int]) -> np.ndarray:
        return self._get(("logits", *ids), lambda: torch_logits(self.model, ids))

    def greedy(self, ids: list[int], n: int) -> list[int]:
        return self._get(("greedy", n, *ids), lambda: torch_greedy(self.model, ids, n))

    def top1(self, ids: list[int], start: int) -> np.ndarray:
        """Argmax at positions start..len(ids)-2 (those that predict ids[start+1:])."""
        return self._get(("top1", start, *ids), lambda: torch_logits(self.model, ids)[start:-1].argmax(-1))


def compare(bundle: Bundle, reference: Reference, texts: list[str], threads: int | None = None) -> dict:
    """Numbers for the bundle against the PyTorch `reference` on `texts` (see module docstring)."""
    gen = Generator(bundle, threads=threads)
    max_diff, agree, positions, identical, prefix = 0.0, 0, 0, True, []
    for text in texts:
        ids = bundle.encode(text)
        ref, got = reference.logits(ids), gen.logits(ids)
        max_diff = max(max_diff, float(np.abs(ref - got).max()))
        agree += int((ref.argmax(-1) == got.argmax(-1)).sum())
        positions += len(ids)
        want = reference.greedy(ids, GREEDY_TOKENS)
        have = list(gen.stream_ids(ids, GREEDY_TOKENS, ignore_eos=True))
        identical &= want == have
        prefix.append(next((i for i, (a, b) in enumerate(zip(want, have)) if a != b), len(want)))
    return {"texts": len(texts), "positions": positions, "max_abs_logit_diff": max_diff,
            "top1_agreement_vs_fp32": agree / positions, "greedy_tokens": GREEDY_TOKENS,
            "greedy_tokens_identical": identical,
            "greedy_matching_prefix_mean": float(np.mean(prefix))}


def check_fp32(result: dict, bundle_dir: Path) -> None:
    """Raise ValidationError unless an fp32 bundle reproduces PyTorch."""
    if result["max_abs_logit_diff"] > FP32_LOGIT_TOLERANCE or not result["greedy_tokens_identical"]:
        raise ValidationError(
            f"export validation failed for {bundle_dir}: max abs logit diff "
            f"{result['max_abs_logit_diff']:.3g} (tolerance {FP32_LOGIT_TOLERANCE}), greedy "
            f"{GREEDY_TOKENS} tokens identical: {result['greedy_tokens_identical']} (mean matching "
            f"prefix {result['greedy_matching_prefix_mean']:.1f}); the bundle was not written. "
            "This is an exporter problem, please report it with the model folder.")
