"""Width pruning on a tiny Llama (2 layers, hidden 64, 4 query heads over 2 KV heads, FFN 128)."""

import copy

import pytest
import torch

from edgestill.distill.prune import (
    Importance,
    calibration_batches,
    importance,
    prune_width,
)
from edgestill.errors import UserError

TEXTS = [
    "The city council voted on Tuesday to expand the bike lane network by 40 kilometres.",
    "Researchers found that people who slept less than six hours were likelier to catch colds.",
    "Our support team will be unavailable on Friday.",
    "The new phone has a larger battery than last year's model and charges quickly.",
]


@pytest.fixture(scope="module")
def tok(tiny_llama_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama_dir)


@pytest.fixture(scope="module")
def model(tiny_llama_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()


@pytest.fixture(scope="module")
def batches(tok):
    return calibration_batches(tok, TEXTS, batch_size=3)


def _logits(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def test_calibration_batches_pad_and_mask(tok, batches):
    assert [b["input_ids"].shape[0] for b in batches] == [3, 1]
    first = batches[0]
    lengths = first["attention_mask"].sum(1).tolist()
    assert lengths == [len(tok(t, add_special_tokens=False)["input_ids"]) for t in TEXTS[:3]]
    assert (first["input_ids"][first["attention_mask"] == 0] == tok.pad_token_id).all()
    with pytest.raises(UserError, match="calibration"):
        calibration_batches(tok, [])


def test_no_calibration_batches_is_a_user_error(model):
    with pytest.raises(UserError, match="calibration"):
        importance(model, [])


def test_importance_shapes_and_padding_does_not_count(model, tok, batches):
    imp = importance(model, batches)
    cfg = model.config
    assert [s.shape for s in imp.ffn] == [(cfg.intermediate_size,)] * cfg.num_hidden_layers
    assert [s.shape for s in imp.heads] == [(cfg.num_attention_heads,)] * cfg.num_hidden_layers
    assert imp.hidden.shape == (cfg.hidden_size,) and (imp.hidden > 0).all()
    one_by_one = importance(model, calibration_batches(tok, TEXTS, batch_size=1))
    assert torch.allclose(one_by_one.hidden, imp.hidden, rtol=1e-4)
    assert torch.allclose(one_by_one.ffn[1], imp.ffn[1], rtol=1e-4, atol=1e-7)


def test_pruning_nothing_reproduces_logits_exactly(model, batches):
    same = prune_width(model, importance(model, batches))
    assert torch.equal(_logits(same, batches[0]), _logits(model, batches[0]))


def test_pruned_model_has_the_asked_shapes_runs_and_round_trips(model, batches, tmp_path):
    from transformers import AutoModelForCausalLM

    small = prune_width(model, importance(model, batches), intermediate_size=48,
                        num_attention_heads=2, num_key_value_heads=1, hidden_size=40).eval()
    cfg = small.config
    assert (cfg.intermediate_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.hidden_size,
            cfg.head_dim) == (48, 2, 1, 40, 16)
    layer = small.model.layers[0]
    assert layer.self_attn.q_proj.weight.shape == (32, 40)
    assert layer.self_attn.k_proj.weight.shape == (16, 40)
    assert layer.self_attn.o_proj.weight.shape == (40, 32)
    assert layer.mlp.down_proj.weight.shape == (40, 48)
    assert small.lm_head.weight is small.model.embed_tokens.weight
    logits = _logits(small, batches[0])
    assert logits.shape[-1] == model.config.vocab_size and torch.isfinite(logits).all()
    small.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert torch.equal(_logits(again, batches[0]), logits)


def test_weights_are_the_kept_slices_of_the_original(model, batches):
    imp = importance(model, batches)
    small = prune_width(model, imp, intermediate_size=100, num_attention_heads=2)  # 1 q head per KV head
    keep = sorted(sorted(range(128), key=lambda i: -float(imp.ffn[1][i]))[:100])
    assert torch.equal(small.model.layers[1].mlp.up_proj.weight, model.model.layers[1].mlp.up_proj.weight[keep])
    assert torch.equal(small.model.layers[1].mlp.down_proj.weight,
                       model.model.layers[1].mlp.down_proj.weight[:, keep])
    assert small.config.num_key_value_heads == 2
    k_old = model.model.layers[0].self_attn.k_proj.weight
    assert torch.equal(small.model.layers[0].self_attn.k_proj.weight, k_old)


def test_a_dead_ffn_channel_is_pruned_first(model, batches):
    dead = copy.deepcopy(model)
    with torch.no_grad():
        dead.model.layers[0].mlp.up_proj.weight[37] = 0
    imp = importance(dead, batches)
    assert int(imp.ffn[0].argmin()) == 37 and float(imp.ffn[0][37]) == 0
    small = prune_width(dead, imp, intermediate_size=127)
    kept_rows = small.model.layers[0].mlp.gate_proj.weight
    assert not any(torch.equal(r, dead.model.layers[0].mlp.gate_proj.weight[37]) for r in kept_rows)


def test_a_silent_head_and_a_silent_kv_group_are_pruned_first(model, batches):
    dead = copy.deepcopy(model)
    d = 16
    with torch.no_grad():
        dead.model.layers[1].self_attn.o_proj.weight[:, 3 * d:4 * d] = 0  # head 3 (KV group 1) adds nothing
        dead.model.layers[0].self_attn.v_proj.weight[0:d] = 0  # KV group 0 (heads 0, 1) outputs zeros
    imp = importance(dead, batches)
    assert int(imp.heads[1].argmin()) == 3 and float(imp.heads[1][3]) == 0
    one_per_group = prune_width(dead, imp, num_attention_heads=2)  # both KV heads stay
    o_old = dead.model.layers[1].self_attn.o_proj.weight
    assert torch.equal(one_per_group.model.layers[1].self_attn.o_proj.weight[:, d:], o_old[:, 2 * d:3 * d])
    one_group = prune_width(dead, imp, num_attention_heads=2, num_key_value_heads=1)
    v_new = one_group.model.layers[0].self_attn.v_proj.weight
    assert torch.equal(v_new, dead.model.layers[0].self_attn.v_proj.weight[d:2 * d])  # group 1 kept
    q_old = dead.model.layers[0].self_attn.q_proj.weight
    assert torch.equal(one_group.model.layers[0].self_attn.q_proj.weight, q_old[2 * d:])  # its heads 2, 3


def test_a_silent_hidden_channel_is_pruned_first(model, batches):
    dead = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in dead.named_parameters():
            if name.endswith("norm.weight"):
                p[5] = 0
    imp = importance(dead, batches)
    assert int(imp.hidden.argmin()) == 5
    small = prune_width(dead, imp, hidden_size=63)
    assert small.model.embed_tokens.weight.shape[1] == 63
    assert torch.equal(small.model.embed_tokens.weight[:, 5], dead.model.embed_tokens.weight[:, 6])


@pytest.mark.parametrize("sizes, message", [
    ({"num_attention_heads": 3}, "multiple of num_key_value_heads"),
    ({"num_attention_heads": 4, "num_key_value_heads": 1}, "at most 2 query heads"),
    ({"intermediate_size": 500}, "intermediate_size 500 must be in 1..128"),
    ({"hidden_size": 0}, "hidden_size 0 must be in 1..64"),
])
def test_bad_sizes_are_user_errors(model, sizes, message):
    cfg = model.config
    imp = Importance(ffn=[torch.ones(cfg.intermediate_size)] * 2, heads=[torch.ones(4)] * 2,
                     hidden=torch.ones(cfg.hidden_size))
    with pytest.raises(UserError, match=message):
        prune_width(model, imp, **sizes)


def test_unknown_architecture_is_a_user_error():
    with pytest.raises(UserError, match="Llama-family"):
        importance(torch.nn.Linear(2, 2), [])
