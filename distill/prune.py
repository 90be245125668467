"""Width pruning (Minitron-style): drop the FFN channels, attention heads and hidden channels
that matter least on the task's own text, then slice the weights into a smaller model.

Importance comes from activations on a few calibration batches (`calibration_batches`), each
score aggregated as Minitron does: L2 norm over a sequence's real tokens, mean over sequences.

- FFN channel i of a layer: |act_i| * ||down_proj[:, i]||, i.e. the size of what the channel
  adds to the residual stream (act = silu(gate) * up, the input of down_proj).
- attention head h: the norm of its contribution o_proj[:, h] @ out_h to the residual stream.
  GQA is respected: a KV group scores the sum of its query heads; the best
  `num_key_value_heads` groups are kept, then the best `num_attention_heads / num_key_value_heads`
  query heads inside each kept group, so every kept KV head serves the same number of heads.
- hidden (embedding) channel c: the sum over every RMSNorm of that norm's output on c.
  Pruning hidden channels changes each RMSNorm's statistics, so it needs retraining (KD).

Each layer keeps its own best channels/heads, with the same count per layer (one config).
Pruning to the current sizes keeps every weight in order and reproduces the logits exactly.
Importance-chosen pruning keeps the loss far below a random choice (docs/log.md).

Functions: `calibration_batches`, `importance` (-> `Importance`), `prune_width` (model -> new
model). No CLI: `distill/__main__.py` calls these when the recipe asks for a narrower student.
Supports Llama-family decoders (LlamaForCausalLM, and Qwen2/Mistral-like layouts with
q/k/v biases); anything else is a clear error.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

import torch

from edgestill.errors import UserError


@dataclass
class Importance:
    """Scores (higher = keep): ffn, L tensors [intermediate_size]; heads, L tensors
    [num_attention_heads]; hidden [hidden_size]."""

    ffn: list[torch.Tensor]
    heads: list[torch.Tensor]
    hidden: torch.Tensor


def calibration_batches(tokenizer, texts: list[str], batch_size: int = 8, max_length: int = 256) -> list[dict]:
    """Right-padded batches {input_ids, attention_mask} [B, S] of `texts` (no added specials)."""
    if not texts:
        raise UserError("student.hidden_size / pruning: no calibration texts; the task's data is empty")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = []
    for start in range(0, len(texts), batch_size):
        encoded = tokenizer(texts[start:start + batch_size], add_special_tokens=False)["input_ids"]
        ids = [x[:max_length] for x in encoded]
        width = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for b, x in enumerate(ids):
            input_ids[b, :len(x)], mask[b, :len(x)] = torch.tensor(x, dtype=torch.long), 1
        out.append({"input_ids": input_ids, "attention_mask": mask})
    return out


class _Scores:
    """Accumulates Minitron aggregates: sum over sequences of the per-sequence L2 norm over tokens."""

    def __init__(self):
        self.total, self.sequences, self.mask = {}, 0, None

    def add(self, key, per_token: torch.Tensor) -> None:
        """`per_token`: [B, S, C] non-negative contributions; padded tokens are masked out."""
        sq = (per_token.float() ** 2 * self.mask[..., None]).sum(1).sqrt().sum(0)  # [C]
        self.total[key] = self.total.get(key, 0) + sq

    def mean(self, key) -> torch.Tensor:
        return self.total[key] / max(1, self.sequences)


def _layers(model):
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None or not all(hasattr(l, "self_attn") and hasattr(l, "mlp") for l in layers):
        raise UserError(f"width pruning supports Llama-family decoders; {type(model).__name__} is not one. "
                        "Leave student.hidden_size and the head/FFN sizes unset")
    return layers


def _hooks(model, scores: _Scores) -> list:
    layers, cfg, handles = _layers(model), model.config, []
    d = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    for i, layer in enumerate(layers):
        down, o_proj = layer.mlp.down_proj, layer.self_attn.o_proj

        def ffn_hook(_, args, i=i, down=down):
            scores.add(("ffn", i), args[0].abs() * down.weight.norm(dim=0))

        def head_hook(_, args, i=i, o_proj=o_proj):
            x = args[0].unflatten(-1, (-1, d))  # [B, S, H, d]
            w = o_proj.weight.unflatten(1, (-1, d))  # [hidden, H, d]
            contrib = torch.einsum("bshd,ohd->bsho", x, w)  # [B, S, H, hidden]
            scores.add(("heads", i), contrib.norm(dim=-1))

        handles += [down.register_forward_pre_hook(ffn_hook), o_proj.register_forward_pre_hook(head_hook)]
    norms = [m for n, m in model.named_modules() if re.search(r"(layernorm|\.norm)$", n) and hasattr(m, "weight")]
    for m in norms:
        handles.append(m.register_forward_hook(lambda _, __, out: scores.add("hidden", out.abs())))
    return handles


@torch.no_grad()
def importance(model, batches: list[dict]) -> Importance:
    """Activation-based scores of every FFN channel, attention head and hidden channel of `model`."""
    scores = _Scores()
    handles = _hooks(model, scores)
    if not batches:
        for h in handles:
            h.remove()
        raise UserError("width pruning: no calibration batches; the task's data is empty")
    was_training, device = model.training, next(model.parameters()).device
    model.eval()
    try:
        for batch in batches:
            ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
            scores.mask = mask.float()
            model(input_ids=ids, attention_mask=mask)
            scores.sequences += batch["input_ids"].shape[0]
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    n = len(_layers(model))
    return Importance(ffn=[scores.mean(("ffn", i)) for i in range(n)],
                      heads=[scores.mean(("heads", i)) for i in range(n)], hidden=scores.mean("hidden"))


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the `k` largest scores, in increasing index order (ties: lower index first)."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    return torch.tensor(sorted(order[:k]), dtype=torch.long)


def _head_choice(scores: torch.Tensor, n_kv: int, new_heads: int, new_kv: int):
    """(kept query heads, kept KV heads), index tensors, for one layer; GQA-consistent."""
    groups = scores.view(n_kv, -1)  # [n_kv, heads per group]
    kept_kv = _top(groups.sum(1), new_kv)
    per_group = new_heads // new_kv
    heads = [g * groups.shape[1] + j for g in kept_kv.tolist() for j in _top(groups[g], per_group).tolist()]
    return torch.tensor(heads, dtype=torch.long), kept_kv


def _check_sizes(cfg, inter: int, heads: int, kv: int, hidden: int) -> None:
    group = cfg.num_attention_heads // cfg.num_key_value_heads
    checks = [
        (0 < inter <= cfg.intermediate_size, f"intermediate_size {inter} must be in 1..{cfg.intermediate_size}"),
        (0 < kv <= cfg.num_key_value_heads, f"num_key_value_heads {kv} must be in 1..{cfg.num_key_value_heads}"),
        (0 < heads and heads % kv == 0 and heads // kv <= group,
         f"num_attention_heads {heads} must be a multiple of num_key_value_heads {kv} with at most "
         f"{group} query heads per KV head (GQA)"),
        (0 < hidden <= cfg.hidden_size, f"hidden_size {hidden} must be in 1..{cfg.hidden_size}"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(f"student width pruning: {message}")


def prune_width(model, imp: Importance, intermediate_size: int | None = None,
                num_attention_heads: int | None = None, num_key_value_heads: int | None = None,
                hidden_size: int | None = None):
    """A new, smaller model: `model` with its least important channels/heads removed.

    Sizes left as None stay as they are. With only `num_attention_heads` given, the KV heads
    stay unless fewer query heads than KV heads are asked for (then one per KV head is kept).
    """
    from transformers import AutoModelForCausalLM

    _layers(model)
    cfg = model.config

    def given(value, default):
        return default if value is None else value

    heads = given(num_attention_heads, cfg.num_attention_heads)
    kv = given(num_key_value_heads, min(cfg.num_key_value_heads, max(1, heads)))
    inter, hidden = given(intermediate_size, cfg.intermediate_size), given(hidden_size, cfg.hidden_size)
    _check_sizes(cfg, inter, heads, kv, hidden)
    d = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    keep = {"hidden": _top(imp.hidden, hidden), "ffn": [_top(s, inter) for s in imp.ffn], "q": [], "kv": []}
    for s in imp.heads:
        q, k = _head_choice(s, cfg.num_key_value_heads, heads, kv)
        keep["q"].append(_rows(q, d))
        keep["kv"].append(_rows(k, d))
    new_cfg = copy.deepcopy(cfg)
    new_cfg.head_dim, new_cfg.intermediate_size, new_cfg.hidden_size = d, inter, hidden
    new_cfg.num_attention_heads, new_cfg.num_key_value_heads = heads, kv
    new = AutoModelForCausalLM.from_config(new_cfg).to(next(model.parameters()).dtype)
    old_sd = model.state_dict()
    new.load_state_dict({name: _slice(name, old_sd[name], keep).clone() for name in new.state_dict()})
    if getattr(model, "generation_config", None) is not None:
        new.generation_config = copy.deepcopy(model.generation_config)
    return new


def _rows(heads: torch.Tensor, d: int) -> torch.Tensor:
    """Weight rows of the given heads, each head `d` rows wide."""
    return (heads[:, None] * d + torch.arange(d)).flatten()


# (name pattern, dims to slice by kind): kinds are "hidden", "ffn", "q", "kv" (per layer).
_RULES = [
    (r"model\.embed_tokens\.weight", (None, "hidden")),
    (r"lm_head\.weight", (None, "hidden")),
    (r"lm_head\.bias", (None,)),
    (r".*self_attn\.[qk]_norm\.weight", ()),  # per-head-dim norms (Qwen3) keep their shape
    (r".*norm\.weight", ("hidden",)),
    (r".*self_attn\.q_proj\.weight", ("q", "hidden")),
    (r".*self_attn\.q_proj\.bias", ("q",)),
    (r".*self_attn\.[kv]_proj\.weight", ("kv", "hidden")),
    (r".*self_attn\.[kv]_proj\.bias", ("kv",)),
    (r".*self_attn\.o_proj\.weight", ("hidden", "q")),
    (r".*self_attn\.o_proj\.bias", ("hidden",)),
    (r".*mlp\.(gate|up)_proj\.weight", ("ffn", "hidden")),
    (r".*mlp\.(gate|up)_proj\.bias", ("ffn",)),
    (r".*mlp\.down_proj\.weight", ("hidden", "ffn")),
    (r".*mlp\.down_proj\.bias", ("hidden",)),
]


def _slice(name: str, weight: torch.Tensor, keep: dict) -> torch.Tensor:
    layer = re.search(r"layers\.(\d+)\.", name)
    for pattern, dims in _RULES:
        if re.fullmatch(pattern, name):
            for axis, kind in enumerate(dims):
                if kind is not None:
                    index = keep[kind] if kind == "hidden" else keep[kind][int(layer.group(1))]
                    weight = weight.index_select(axis, index)
            return weight
    raise UserError(f"width pruning does not know how to slice the weight {name}; "
                    "leave student.hidden_size and the head/FFN sizes unset for this model")
