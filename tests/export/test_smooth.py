"""Activation smoothing (export/smooth.py): the fp32 model is unchanged, int8 rounding loses less."""

import json

import pytest
import torch

from edgestill.export.qat import (
    QatSettings,
    attach_fake_quant,
    detach_fake_quant,
    kl_to_reference,
)
from edgestill.export.smooth import (
    input_amax,
    smooth_checkpoint,
    smooth_model,
    supports,
)

SEQS = [[1, 17, 300, 41, 5, 990, 12, 7, 64], [1, 33, 4, 2000, 81, 6, 15], [1, 8, 9, 700, 3, 3, 3, 45, 2, 11, 19]]


def _outlier_model(tiny_llama_dir):
    """The tiny model with a few large input channels planted, as trained LLMs have."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.input_layernorm.weight[[3, 40]] *= 30
            layer.post_attention_layernorm.weight[[7, 21]] *= 30
            layer.mlp.up_proj.weight[[5, 90]] *= 20
            layer.self_attn.v_proj.weight[[2, 20]] *= 20
    return model


def _logits(model):
    with torch.no_grad():
        return [model(input_ids=torch.tensor([s])).logits for s in SEQS]


def _int8_kl(model, reference_logits):
    handles = attach_fake_quant(model, QatSettings(bits=8, block=16))
    try:
        kls = [kl_to_reference(q, r, torch.ones(r.shape[:2])) for q, r in zip(_logits(model), reference_logits)]
    finally:
        detach_fake_quant(model, handles)
    return float(sum(kls) / len(kls))


def test_smoothing_keeps_the_fp32_function_and_lowers_the_int8_error(tiny_llama_dir):
    model = _outlier_model(tiny_llama_dir)
    before = _logits(model)
    kl_before = _int8_kl(model, before)
    norm = model.model.layers[0].input_layernorm.weight.clone()
    assert smooth_model(model, input_amax(model, SEQS)) == 4 * len(model.model.layers)
    assert not torch.allclose(model.model.layers[0].input_layernorm.weight, norm)  # it did move scales
    for a, b in zip(_logits(model), before):  # q/k/v, gate/up, down (via up_proj) and o (via v_proj, GQA)
        assert (a - b).abs().max() < 1e-4 * b.abs().max()
    kl_after = _int8_kl(model, before)
    assert kl_after < 0.7 * kl_before, (kl_before, kl_after)


def test_smooth_checkpoint_writes_an_equivalent_folder(tiny_llama_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    record = smooth_checkpoint(tiny_llama_dir, tmp_path / "smoothed", SEQS)
    assert record["groups"] == 8 and record["calibration_sequences"] == 3 and record["alpha"] == 0.5
    assert (tmp_path / "smoothed" / "tokenizer.json").is_file()
    assert not list((tmp_path / "smoothed").glob("*.bin"))
    a = AutoModelForCausalLM.from_pretrained(tmp_path / "smoothed", dtype=torch.float32).eval()
    b = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    for x, y in zip(_logits(a), _logits(b)):
        assert torch.allclose(x, y, atol=1e-4)


def test_other_layouts_are_left_alone():
    from transformers import Phi3Config, Phi3ForCausalLM

    phi = Phi3ForCausalLM(Phi3Config(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                     num_attention_heads=4, num_key_value_heads=4, vocab_size=100,
                                     pad_token_id=0, bos_token_id=1, eos_token_id=2))
    assert not supports(phi)  # fused qkv_proj / gate_up_proj: nothing to fold the scales into


def test_the_int8_bundle_is_smoothed_and_records_it(int8_bundle):
    q = json.loads((int8_bundle / "manifest.json").read_text())["quantization"]
    assert q["activation_smoothing"].startswith("SmoothQuant alpha 0.5")
    assert q["activation_smoothing_calibration"]["calibration_sequences"] > 0


@pytest.mark.parametrize("name", ["int4-mixed"])
def test_mixed_presets_splice_unsmoothed_graphs(name):
    from edgestill.export.quantize import PRESETS, preset, unsmoothed

    coarse, fine = (unsmoothed(preset(n)) for n in PRESETS[name].mixed[:2])
    assert not coarse.smooth and not fine.smooth and PRESETS["int8-b32"].smooth
    assert "activation_smoothing" not in fine.quantization


def test_save_checkpoint_replaces_a_folder_only_when_the_write_finished(tiny_llama_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from edgestill.export.checkpoint import save_checkpoint

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    out = tmp_path / "copy"
    save_checkpoint(model, tiny_llama_dir, out, {"note.json": {"n": 1}})
    assert json.loads((out / "note.json").read_text()) == {"n": 1} and (out / "model.safetensors").is_file()

    def broken(*_a, **_k):
        raise OSError("disk full")
    model.save_pretrained = broken
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(model, tiny_llama_dir, out, {"note.json": {"n": 2}})
    assert json.loads((out / "note.json").read_text()) == {"n": 1}  # the finished copy is untouched
