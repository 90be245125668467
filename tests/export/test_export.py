"""Export of the tiny random Llama: validation, manifest, quantized graph, CLI behaviour."""

from __future__ import annotations

import json
from collections import Counter

import onnx
import pytest

from edgestill.errors import UserError
from edgestill.files import sha256_file
from runtime import Bundle


def graph_ops(bundle_dir):
    return onnx.load(str(bundle_dir / "model.onnx"), load_external_data=False).graph.node


def test_fp32_bundle_passes_validation(fp32_bundle):
    m = json.loads((fp32_bundle / "manifest.json").read_text())
    v = m["validation"]
    assert v["max_abs_logit_diff"] <= 1e-3
    assert v["greedy_tokens_identical"] and v["greedy_tokens"] == 32
    assert v["top1_agreement_vs_fp32"] == 1.0
    assert m["quantization"] is None and m["params"] > 0


def test_manifest_describes_the_bundle(int8_bundle, tiny_llama_dir):
    m = json.loads((int8_bundle / "manifest.json").read_text())
    assert (m["format"], m["format_version"], m["role"], m["precision"]) == ("edgestill-bundle", 1, "student", "int8")
    assert m["quantization"]["bits"] == 8 and m["quantization"]["accuracy_level"] == 4
    assert m["model"]["num_layers"] == 2 and m["model"]["num_kv_heads"] == 2 and m["model"]["head_dim"] == 16
    assert m["model"]["inputs"][:2] == ["input_ids", "attention_mask"] and m["model"]["outputs"][0] == "logits"
    assert m["tokens"]["eos_token_ids"] == [2]
    assert "{user}" in m["prompt"]["template"] and m["prompt"]["template"].startswith("<|im_start|>")
    assert 0.0 <= m["quality"]["top1_agreement_vs_fp32"] <= 1.0
    files = {p.name for p in int8_bundle.iterdir()} - {"manifest.json"}
    assert set(m["files"]) == files >= {"model.onnx", "model.onnx.data", "genai_config.json",
                                        "tokenizer.json", "tokenizer_config.json"}
    for name, meta in m["files"].items():
        assert sha256_file(int8_bundle / name) == meta["sha256"]
    assert Bundle.open(int8_bundle).manifest == m


def test_int8_quantizes_every_matmul_including_lm_head(int8_bundle, fp32_bundle):
    ops = Counter(n.op_type for n in graph_ops(int8_bundle))
    assert ops["MatMul"] == 0 and ops["MatMulNBits"] == Counter(n.op_type for n in graph_ops(fp32_bundle))["MatMul"]
    head = [n for n in graph_ops(int8_bundle) if n.name.startswith("/lm_head/")]
    assert [n.op_type for n in head] == ["MatMulNBits"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in head[0].attribute}
    assert attrs["bits"] == 8 and attrs["accuracy_level"] == 4 and attrs["block_size"] == 32


def test_int8_embedding_reads_the_lm_head_int8_matrix(int8_bundle, fp32_bundle):
    nodes = graph_ops(int8_bundle)
    head = next(n for n in nodes if n.name.startswith("/lm_head/"))
    embed = [n for n in nodes if n.name.startswith("/model/embed_tokens/")]
    assert [n.op_type for n in embed] == ["Reshape", "GatherBlockQuantized"]
    assert embed[0].input[0] == head.input[1] and embed[1].input[2] == head.input[2]
    assert {a.name: onnx.helper.get_attribute_value(a) for a in embed[1].attribute}["bits"] == 8
    size = lambda d: sum(f["bytes"] for f in json.loads((d / "manifest.json").read_text())["files"].values())
    assert size(int8_bundle) < 0.6 * size(fp32_bundle)
    assert json.loads((int8_bundle / "manifest.json").read_text())["quantization"]["embedding"].startswith("int8")


def test_finished_bundle_is_skipped_and_damaged_one_rebuilt(tmp_path, tiny_llama_dir, fp32_bundle, caplog):
    import shutil

    from export import export_bundle
    from tests.export.tiny_bundles import INSTRUCTION, TEXTS

    out = tmp_path / "bundle-fp32"
    shutil.copytree(fp32_bundle, out)
    before = (out / "manifest.json").stat().st_mtime_ns
    export_bundle(tiny_llama_dir, out, "fp32", "student", INSTRUCTION, TEXTS)
    assert (out / "manifest.json").stat().st_mtime_ns == before
    (out / "genai_config.json").write_text("{}")
    export_bundle(tiny_llama_dir, out, "fp32", "student", INSTRUCTION, TEXTS)
    Bundle.open(out)
    assert not list(tmp_path.glob(".*tmp"))


def test_cli_without_student_says_to_run_distill(tmp_path):
    from export.__main__ import main

    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: nostudent\ntask:\n  instruction: Summarize.\n"
                      "  seed_examples: [{input: a, output: b}]\n")
    with pytest.raises(UserError, match=r"student.*python -m distill"):
        main([str(recipe), "--build-root", str(tmp_path / "build")])


def test_cli_exports_student_and_teacher(tmp_path, tiny_llama_dir, capsys):
    """`python -m export RECIPE` on a build folder shaped like distill's output (tiny model as both)."""
    import shutil

    from export.__main__ import main

    build = tmp_path / "build" / "tiny"
    shutil.copytree(tiny_llama_dir, build / "student")
    (build / "student" / "distill_report.json").write_text(json.dumps(
        {"task": {"instruction": "Summarize."}, "teacher": {"source": "tiny", "dir": str(tiny_llama_dir)}}))
    (build / "data").mkdir()
    (build / "data" / "teacher.jsonl").write_text(
        json.dumps({"id": 0, "split": "train", "input": "train text"}) + "\n"
        + json.dumps({"id": 1, "split": "eval", "input": "An eval paragraph about bikes."}) + "\n")
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text("name: tiny\ntask:\n  instruction: Summarize.\n  seed_examples: [{input: a, output: b}]\n")
    assert main([str(recipe), "export.precisions=[fp32]", "--build-root", str(tmp_path / "build")]) == 0
    student, teacher = Bundle.open(build / "bundle-fp32"), Bundle.open(build / "teacher-bundle-fp32")
    assert (student.manifest["role"], teacher.manifest["role"]) == ("student", "teacher")
    assert student.manifest["validation"]["texts"] == 1  # the one eval record, not the train one
    assert student.manifest["source"]["recipe"] == "tiny" and "tiny-fp32" in capsys.readouterr().out


def test_int8_embedding_is_tied_only_for_tied_checkpoints(tmp_path, tiny_llama_dir):
    from export.bundle import ties_embeddings

    assert ties_embeddings(tiny_llama_dir)
    (tmp_path / "config.json").write_text(json.dumps({"tie_word_embeddings": False}))
    assert not ties_embeddings(tmp_path)
