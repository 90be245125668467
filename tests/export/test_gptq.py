"""GPTQ (export/gptq.py): rounding onto the builder's exact MatMulNBits grid with less output error
than round-to-nearest, and the int4-gptq preset through `edgestill export`."""


import numpy as np
import pytest
import torch

from edgestill.export.fakequant import fake_quant_weight
from edgestill.export.gptq import gptq_weight
from edgestill.runtime import Bundle
from tests.export.test_export import _tiny_recipe, fragile_build_with_train_split


def _correlated_inputs(k: int, n: int = 2000, seed: int = 0) -> torch.Tensor:
    """Inputs whose channels are correlated (16 main directions) and unevenly scaled, as a decoder's
    activations are."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 16, generator=g) @ torch.randn(16, k, generator=g) + 0.1 * torch.randn(n, k, generator=g)
    return x * torch.linspace(0.2, 3.0, k)


@pytest.mark.parametrize("bits,block,k", [(4, 32, 96), (4, 16, 72), (8, 32, 80)])
def test_gptq_lands_on_the_rtn_grid_with_less_output_error(bits, block, k):
    """K=72 and 80 end in a partial block. Rounding the result again with the builder's rule changes
    nothing (so the builder keeps GPTQ's codes and scales), and ||(W - Q) X|| is below RTN's."""
    g = torch.Generator().manual_seed(1)
    w = torch.randn(48, k, generator=g) * 0.05
    x = _correlated_inputs(k)
    q = gptq_weight(w, x.T @ x, bits, block)
    assert torch.equal(fake_quant_weight(q, bits, block), q)
    rtn = fake_quant_weight(w, bits, block)
    assert not torch.equal(q, rtn)
    err_gptq, err_rtn = ((w - q) @ x.T).norm(), ((w - rtn) @ x.T).norm()
    assert err_gptq < 0.7 * err_rtn  # measured 0.49-0.51


def test_gptq_zeroes_input_channels_that_are_never_used():
    """A channel that is always 0 in the calibration text has no Hessian: its weights become 0."""
    x = _correlated_inputs(64)
    x[:, 5] = 0
    q = gptq_weight(torch.randn(16, 64) * 0.05, x.T @ x, 4, 32)
    assert torch.all(q[:, 5] == 0) and torch.equal(fake_quant_weight(q, 4, 32), q)


def test_stacked_rows_round_as_each_matrix_alone():
    """GPTQ rounds q/k/v (and gate/up) as one stacked matrix; each row has its own scales and error
    feedback, so the result must be bit-identical to rounding each matrix on its own."""
    g = torch.Generator().manual_seed(2)
    x = _correlated_inputs(64)
    mats = [torch.randn(n, 64, generator=g) * 0.05 for n in (32, 8, 8)]
    alone = torch.cat([gptq_weight(m, x.T @ x, 4, 32) for m in mats])
    assert torch.equal(gptq_weight(torch.cat(mats), x.T @ x, 4, 32), alone)


def test_hessians_group_the_modules_that_read_one_input_and_the_first_layer_shortcut(tiny_llama_dir):
    """_Hessians groups q/k/v and gate/up (they read the same tensor), and layer_inputs(first_only)
    gives layer 0 the same (args, kwargs) as a full pass, without running the layers."""
    from transformers import AutoModelForCausalLM

    from edgestill.export.calibration import layer_inputs, run_layer
    from edgestill.export.gptq import _Hessians

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    batch = {"input_ids": torch.randint(5, 100, (2, 11)), "attention_mask": torch.ones(2, 11, dtype=torch.long)}
    full = layer_inputs(model, [batch])[0]
    first = layer_inputs(model, [batch], first_only=True)[0]
    assert len(first) == 1 and len(full) == len(model.model.layers) + 1
    first = first[0]
    assert torch.equal(first[0][0], full[0][0][0]) and first[1].keys() == full[0][1].keys()
    layer = model.model.layers[0]
    linears = {n: m for n, m in layer.named_modules() if isinstance(m, torch.nn.Linear)}
    hs = _Hessians(linears)
    with torch.no_grad():
        run_layer(layer, first[0][0], *first)
    hs.close()
    assert sorted(map(sorted, hs.groups())) == sorted([["self_attn.k_proj", "self_attn.q_proj", "self_attn.v_proj"],
                                                      ["mlp.gate_proj", "mlp.up_proj"], ["self_attn.o_proj"],
                                                      ["mlp.down_proj"]])


def _dequantized(model, node_prefix: str) -> np.ndarray:
    """The [N, K] weight a symmetric MatMulNBits node computes with: (code - 2^(bits-1)) * scale."""
    from onnx import numpy_helper

    node = next(n for n in model.graph.node if n.op_type == "MatMulNBits" and n.name.startswith(node_prefix))
    attrs = {a.name: a.i for a in node.attribute}
    inits = {t.name: t for t in model.graph.initializer}
    packed = numpy_helper.to_array(inits[node.input[1]])  # [N, blocks, bytes per block]
    scales = numpy_helper.to_array(inits[node.input[2]]).reshape(attrs["N"], -1)
    bits = attrs["bits"]
    if bits == 4:
        codes = np.stack([packed & 0x0F, packed >> 4], -1).reshape(attrs["N"], scales.shape[1], -1)
    else:
        codes = packed
    w = (codes.astype(np.float32) - 2 ** (bits - 1)) * scales[..., None]
    return w.reshape(attrs["N"], -1)[:, : attrs["K"]]


def test_int4_gptq_presets_build_the_gptq_weights_exactly(tmp_path, tiny_llama_dir):
    """`edgestill export` with int4-gptq: GPTQ runs on the smoothed student with the train split,
    its record is in the manifest, and the bundle's int4 weights decode bit for bit to the weights
    that smoothing + GPTQ give on the same calibration text (a fused qkv node and the tied LM head),
    so the unmodified builder kept every code and scale. int4-gptq-mixed plans on those GPTQ
    weights: what it simulates for all-coarse is what the int4-gptq bundle measures, and what it
    simulates for its mix is what its bundle measures."""
    import onnx
    from safetensors.torch import load_file

    from edgestill.export.__main__ import main
    from edgestill.export.calibration import calibration_ids
    from edgestill.export.gptq import GptqSettings, gptq_checkpoint
    from edgestill.export.smooth import smooth_checkpoint

    build = fragile_build_with_train_split(tmp_path, tiny_llama_dir)
    args = [str(_tiny_recipe(tmp_path)), "export.precisions=[int4,int4-gptq,int4-gptq-mixed]",
            "export.mixed_budget=0.3", "--build-root", str(tmp_path / "build")]
    assert main(args) in (0, 1)
    m = Bundle.open(build / "bundle-int4-gptq").manifest
    q = m["quantization"]
    assert q["algorithm"] == "gptq" and q["gptq_calibration"]["calibration_sequences"] == 8
    errors = q["gptq_relative_output_error"]
    assert "model.lm_head" not in errors and "lm_head" in errors and all(e["gptq"] > 0 for e in errors.values())
    assert sum(e["gptq"] < e["rtn"] for e in errors.values()) > len(errors) / 2

    student, data = build / "student", build / "data" / "teacher.jsonl"
    ids = calibration_ids(student, data, "Summarize.", [])
    smooth_checkpoint(student, tmp_path / "smoothed", ids)
    gptq_checkpoint(tmp_path / "smoothed", tmp_path / "gptq", ids, GptqSettings(4, 32))
    weights = load_file(tmp_path / "gptq" / "model.safetensors")
    model = onnx.load(str(build / "bundle-int4-gptq" / "model.onnx"))
    qkv = torch.cat([weights[f"model.layers.0.self_attn.{p}_proj.weight"] for p in "qkv"]).numpy()
    np.testing.assert_array_equal(_dequantized(model, "/model/layers.0/attn/qkv_proj/"), qkv)
    head = weights.get("lm_head.weight", weights["model.embed_tokens.weight"]).numpy()
    np.testing.assert_array_equal(_dequantized(model, "/lm_head/"), head)
    assert not np.array_equal(_dequantized(onnx.load(str(build / "bundle-int4" / "model.onnx")), "/lm_head/"), head)

    mixed = Bundle.open(build / "bundle-int4-gptq-mixed").manifest
    plan = mixed["quantization"]["plan"]
    assert mixed["quantization"]["gptq"]["calibration_sequences"] == 8 and 0 < len(plan["fine_nodes"]) < plan["nodes"]
    assert abs(plan["simulated_top1_vs_fp32"]["coarse"] - m["quality"]["top1_agreement_vs_fp32"]) <= 0.02
    assert abs(plan["simulated_top1_vs_fp32"]["mixed"] - mixed["quality"]["top1_agreement_vs_fp32"]) <= 0.02


def test_a_tied_head_keeps_rtn_when_gptq_would_move_the_embedding_rows(tmp_path, tiny_llama_dir):
    """The 2-layer model's final hidden states span few directions, so GPTQ of its tied LM head
    pushes rounding error into the embedding rows (weight error several times RTN's, and the int4
    bundle's top-1 fell to 0.62 before the guard). The guard keeps RTN for that head; with the
    guard off, the head's weight error is over the 2x limit."""
    from safetensors.torch import load_file

    from edgestill.export.calibration import calibration_ids
    from edgestill.export.gptq import GptqSettings, gptq_checkpoint
    from tests.export.tiny_bundles import INSTRUCTION, TEXTS

    ids = calibration_ids(tiny_llama_dir, None, INSTRUCTION, TEXTS)
    original = load_file(tiny_llama_dir / "model.safetensors")["model.embed_tokens.weight"]
    rtn = fake_quant_weight(original, 4, 32)
    guarded = gptq_checkpoint(tiny_llama_dir, tmp_path / "guarded", ids, GptqSettings(4, 32))
    assert guarded["rtn_kept_for"] == ["lm_head"]
    assert torch.equal(load_file(tmp_path / "guarded" / "model.safetensors")["model.embed_tokens.weight"], rtn)
    gptq_checkpoint(tiny_llama_dir, tmp_path / "free", ids, GptqSettings(4, 32, tied_weight_error=float("inf")))
    free = load_file(tmp_path / "free" / "model.safetensors")["model.embed_tokens.weight"]
    assert (free - original).norm() > 2 * (rtn - original).norm()
