"""Mixed-precision presets (export/mixed.py): the plan spends the budget where the task's text says,
and the spliced graph is exactly the fine graph at the chosen nodes."""

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgestill.export.mixed import _group_of, byte_costs, greedy, node_group, splice
from edgestill.runtime import Bundle
from tests.export.test_export import _tiny_recipe, fragile_build_with_train_split


def test_greedy_takes_the_best_gain_per_byte_that_fits():
    gains = {"a": 1.0, "b": 0.9, "c": 0.5, "d": -0.1, "e": 0.0}
    extra = {"a": 100, "b": 10, "c": 10, "d": 1, "e": 1}
    assert greedy(gains, extra, 25) == ["b", "c"]  # a would not fit after them; d/e gain nothing
    assert greedy(gains, extra, 120) == ["b", "c", "a"]
    assert greedy(gains, extra, 5) == []


def test_node_groups_follow_the_builders_names():
    assert node_group("model.layers.3.self_attn.k_proj") == "/model/layers.3/attn/qkv_proj/MatMul"
    assert node_group("model.layers.0.mlp.down_proj") == "/model/layers.0/mlp/down_proj/MatMul"
    assert node_group("lm_head") == "/lm_head/MatMul"
    assert _group_of("/model/layers.3/attn/qkv_proj/MatMul_Q4") == "/model/layers.3/attn/qkv_proj/MatMul"
    with pytest.raises(ValueError, match="model.layers.0.mlp.w1"):
        node_group("model.layers.0.mlp.w1")


def _nodes(model):
    return {_group_of(n.name): n for n in model.graph.node if n.op_type == "MatMulNBits"}


def _arrays(model, node):
    inits = {t.name: t for t in model.graph.initializer}
    return [numpy_helper.to_array(inits[i]) for i in node.input[1:]]


@pytest.fixture(scope="module")
def int4_and_int8_graphs(tmp_path_factory, tiny_llama_dir):
    from edgestill.export.bundle import build_model
    from edgestill.export.quantize import preset, unsmoothed

    out = tmp_path_factory.mktemp("graphs")
    for name in ("int4", "int8-b32"):
        (out / name).mkdir()
        build_model(tiny_llama_dir, out / name, unsmoothed(preset(name)), out / f"{name}.log")
    return out / "int4" / "model.onnx", out / "int8-b32" / "model.onnx"


def test_splice_takes_the_fine_nodes_weights_and_the_embedding_with_the_lm_head(int4_and_int8_graphs):
    coarse_file, fine_file = int4_and_int8_graphs
    coarse, fine = onnx.load(str(coarse_file)), onnx.load(str(fine_file))
    chosen = ["/lm_head/MatMul", "/model/layers.1/mlp/down_proj/MatMul"]
    extra, coarse_bytes, fp32_bytes = byte_costs(coarse, fine)
    assert set(extra) == set(_nodes(coarse)) and all(v > 0 for v in extra.values()) and coarse_bytes < fp32_bytes
    splice(coarse, fine, chosen)
    import onnxruntime as ort

    ort.InferenceSession(coarse.SerializeToString(), providers=["CPUExecutionProvider"])  # loads: a valid graph
    mixed, theirs, original = _nodes(coarse), _nodes(fine), _nodes(onnx.load(str(coarse_file)))
    for group, node in mixed.items():
        source = theirs[group] if group in chosen else original[group]
        model = fine if group in chosen else onnx.load(str(coarse_file))
        assert list(node.attribute) == list(source.attribute)
        assert all(np.array_equal(a, b) for a, b in zip(_arrays(coarse, node), _arrays(model, source)))
    gather = next(n for n in coarse.graph.node if n.op_type == "GatherBlockQuantized")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in gather.attribute}
    assert attrs["bits"] == 8  # the tied embedding now reads the LM head's int8 matrix
    inits = {t.name for t in coarse.graph.initializer}
    assert not any(i.endswith("_Q4") and i.startswith("lm_head") for i in inits)  # the 4-bit head is gone


def test_int4_mixed_spends_its_budget_on_the_sensitive_lm_head(tmp_path, tiny_llama_dir):
    """The fragile model (an outlier column in the tied LM head) through `edgestill export`: the plan
    finds that the LM head is where int4 hurts, the bundle carries it in int8 within the byte budget,
    and the bundle measures what the plan simulated, well above plain int4."""
    from edgestill.export.__main__ import main

    build = fragile_build_with_train_split(tmp_path, tiny_llama_dir)
    # the tiny model's 49k-token LM head is most of its bytes: int8 for it needs a 30% budget
    main([str(_tiny_recipe(tmp_path)), "export.precisions=[fp32,int4,int4-mixed]", "export.mixed_budget=0.3",
          "--build-root", str(tmp_path / "build")])
    plain = Bundle.open(build / "bundle-int4").manifest
    mixed = Bundle.open(build / "bundle-int4-mixed").manifest
    plan = mixed["quantization"]["plan"]
    gains = plan["gains_kl"]
    assert max(gains, key=gains.get) == "/lm_head/MatMul" and "/lm_head/MatMul" in plan["fine_nodes"]
    assert len(plan["fine_nodes"]) < plan["nodes"]  # the budget binds
    fp32_bytes = (build / "bundle-fp32" / "model.onnx.data").stat().st_size
    data = (build / "bundle-int4-mixed" / "model.onnx.data").stat().st_size
    assert mixed["quantization"]["budget_fraction_of_fp32"] == 0.3
    assert mixed["quantization"]["model_bytes_fraction_of_fp32"] <= 0.3
    assert data / fp32_bytes <= 0.3 + 0.01  # what the plan counted is what the file holds
    top1 = mixed["quality"]["top1_agreement_vs_fp32"]
    assert top1 > plain["quality"]["top1_agreement_vs_fp32"] + 0.1
    assert abs(plan["simulated_top1_vs_fp32"]["mixed"] - top1) <= 0.02
    assert abs(plan["simulated_top1_vs_fp32"]["coarse"] - plain["quality"]["top1_agreement_vs_fp32"]) <= 0.02


@pytest.mark.parametrize("tied", [True, False])
def test_prefix_kl_equals_a_full_pass_for_every_node_group(tiny_llama_dir, tied):
    """The plan scores a group by rerunning only the layers from the group's own onward; that must
    give the KL of a full forward pass with the same weights, for every group (tied head or not)."""
    import torch
    from transformers import AutoModelForCausalLM

    from edgestill.export.calibration import Scorer, Seq
    from edgestill.export.mixed import _PrefixKL, _Simulated
    from edgestill.export.quantize import preset

    def load():
        model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32, tie_word_embeddings=tied)
        if not tied:
            with torch.no_grad():  # its own head, so that the untied path is really taken
                model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone() * 1.5)
        return model.eval()

    reference = load()
    gen = torch.Generator().manual_seed(0)
    vocab = reference.config.vocab_size
    seqs = [Seq(torch.randint(5, vocab, (n,), generator=gen).tolist(), n - 6) for n in (17, 23, 12, 30, 9)]
    scorer = Scorer(reference, seqs, 0, batch_size=2)
    sim = _Simulated(load(), preset("int4"), preset("int8-b32"))
    prefix = _PrefixKL(sim, scorer)
    assert prefix.tied is tied
    base = prefix.coarse()  # all coarse, from the kept pass
    sim.use(sim.choice())
    # rel 1e-4: the full pass computes the head on other matmul shapes, and on some CPUs (seen on an
    # AMD EPYC) their float32 sums differ by ~2e-5 relative on a KL of ~3e-4
    assert base == pytest.approx(scorer(sim.model)[1], rel=1e-4, abs=1e-9)
    assert prefix.start("/lm_head/MatMul") == (0 if tied else len(prefix.layers))
    for group in sim.groups:
        fast = prefix(group)
        sim.use(sim.choice([group]))
        assert fast == pytest.approx(scorer(sim.model)[1], rel=1e-4, abs=1e-9), group
