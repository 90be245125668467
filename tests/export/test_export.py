"""Export of the tiny random Llama: validation, manifest, quantized graph, CLI behaviour."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgestill.errors import UserError
from edgestill.files import sha256_file
from edgestill.runtime import Bundle


def graph_ops(bundle_dir):
    return onnx.load(str(bundle_dir / "model.onnx"), load_external_data=False).graph.node


def test_fp32_bundle_passes_validation(fp32_bundle):
    m = json.loads((fp32_bundle / "manifest.json").read_text())
    v = m["validation"]
    assert v["max_abs_logit_diff"] <= 1e-3
    assert v["greedy_tokens_identical"] and v["greedy_tokens"] == 64
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
    q = json.loads((int8_bundle / "manifest.json").read_text())["quantization"]
    assert q["algorithm"] == "gptq" and q["gptq_calibration"]["calibration_sequences"] > 0  # on the eval prompts


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


def test_finished_bundle_is_skipped_and_damaged_one_refused_unless_overwrite(tmp_path, tiny_llama_dir, fp32_bundle):
    import shutil

    from edgestill.export import ExportSettings, export_bundle
    from tests.export.tiny_bundles import INSTRUCTION, TEXTS

    out = tmp_path / "bundle-fp32"
    shutil.copytree(fp32_bundle, out)
    before = (out / "manifest.json").stat().st_mtime_ns
    export_bundle(tiny_llama_dir, out, "fp32", ExportSettings(INSTRUCTION, tuple(TEXTS)))
    assert (out / "manifest.json").stat().st_mtime_ns == before
    (out / "genai_config.json").write_text("{}")
    with pytest.raises(UserError, match=r"bundle-fp32 exists .*genai_config.json.*--overwrite"):
        export_bundle(tiny_llama_dir, out, "fp32", ExportSettings(INSTRUCTION, tuple(TEXTS)))
    export_bundle(tiny_llama_dir, out, "fp32", ExportSettings(INSTRUCTION, tuple(TEXTS), overwrite=True))
    Bundle.open(out)
    assert not list(tmp_path.glob(".*tmp"))


def test_a_copy_biased_bundle_passes_fp32_validation(tmp_path, tiny_llama_dir):
    """A free-text bundle with task.copy_bias: validation compares plain greedy decoding with PyTorch
    (the bias is the text-level default only), and the manifest carries the bias."""
    from edgestill.export import ExportSettings, export_bundle
    from edgestill.runtime import Generator
    from tests.export.tiny_bundles import INSTRUCTION, TEXTS

    out = tmp_path / "bundle-fp32"
    manifest = export_bundle(tiny_llama_dir, out, "fp32", ExportSettings(INSTRUCTION, tuple(TEXTS), copy_bias=20.0))
    assert manifest["task"] == {"copy_bias": 20.0} and manifest["validation"]["greedy_tokens_identical"]
    gen = Generator(Bundle.open(out), threads=2)
    assert gen.generate(TEXTS[0], max_new_tokens=8, ignore_eos=True) != \
        gen.generate(TEXTS[0], max_new_tokens=8, ignore_eos=True, copy_bias=0.0)


def test_cli_without_student_says_to_run_distill(tmp_path):
    from edgestill.export.__main__ import main

    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: nostudent\ntask:\n  instruction: Summarize.\n"
                      "  seed_examples: [{input: a, output: b}]\n")
    with pytest.raises(UserError, match=r"student.*edgestill distill"):
        main([str(recipe), "--build-root", str(tmp_path / "build")])


def test_cli_exports_student_and_teacher(tmp_path, tiny_llama_dir, capsys):
    """`edgestill export RECIPE` on a build folder shaped like distill's output (tiny model as both)."""
    import shutil

    from edgestill.export.__main__ import main

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
    from edgestill.export.build import ties_embeddings

    assert ties_embeddings(tiny_llama_dir)
    (tmp_path / "config.json").write_text(json.dumps({"tie_word_embeddings": False}))
    assert not ties_embeddings(tmp_path)


# ------------------------------------------------------------------ quality, floors, presets


def test_quality_on_held_out_teacher_text(fp32_bundle, int8_bundle, tiny_llama_dir):
    """Figures recomputed from PyTorch: fp32 agrees with itself; perplexity is exp(mean NLL)."""
    import numpy as np
    import torch

    from edgestill.export.validate import load_torch_model
    from tests.export.tiny_bundles import PAIRS

    q32 = json.loads((fp32_bundle / "manifest.json").read_text())["quality"]
    assert q32["top1_agreement_vs_fp32"] == 1.0 and q32["quality_texts"] == 2
    bundle, model = Bundle.open(fp32_bundle), load_torch_model(tiny_llama_dir)
    nll, hits, n = 0.0, 0, 0
    for text, answer, ended in PAIRS:
        prompt = bundle.encode(text)
        target = bundle.tokenizer.encode(answer, add_special_tokens=False).ids + ([2] if ended else [])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([prompt + target])).logits[0], -1)
        rows = logp[len(prompt) - 1:-1]
        nll -= float(rows[torch.arange(len(target)), torch.tensor(target)].sum())
        hits += int((rows.argmax(-1) == torch.tensor(target)).sum())
        n += len(target)
    assert q32["quality_positions"] == n
    assert q32["perplexity_teacher_text"] == pytest.approx(float(np.exp(nll / n)), rel=1e-3)
    assert q32["top1_agreement_vs_teacher"] == pytest.approx(hits / n, abs=1e-4)
    m8 = json.loads((int8_bundle / "manifest.json").read_text())
    assert set(m8["quality"]) >= {"top1_agreement_vs_fp32", "top1_agreement_vs_teacher", "perplexity_teacher_text"}
    floor = m8["quality_floor"]
    assert floor["metric"] == "top1_agreement_vs_fp32" and floor["floor"] == 0.98
    assert floor["passed"] == (m8["quality"]["top1_agreement_vs_fp32"] >= 0.98)


def test_every_recipe_precision_is_a_preset_with_a_floor():
    from edgestill.export.gguf_bundle import GGUF_PRESETS
    from edgestill.export.quantize import PRESETS
    from edgestill.recipe import PRECISIONS

    assert set(PRECISIONS) == set(PRESETS) | set(GGUF_PRESETS) and not set(PRESETS) & set(GGUF_PRESETS)
    assert all(0.5 < p.floor <= 1.0 for p in PRESETS.values())
    assert PRESETS["int8"].floor == 0.98 and PRESETS["int4"].floor == 0.95


def fragile_model(src, out):
    """A copy of the tiny model whose embedding (= tied LM head) has one outlier column: 4-bit blocks
    holding it round the other 31 weights to zero, so int4 changes most top-1 choices."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, out)
    weights = load_file(out / "model.safetensors")
    key = next(k for k in weights if k.endswith("embed_tokens.weight"))
    torch.manual_seed(0)
    weights[key][:, 0] = torch.randn(weights[key].shape[0]) * 0.15
    save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    return out


def test_cli_exits_1_when_a_bundle_is_below_its_floor(tmp_path, tiny_llama_dir, capsys):
    """A quantization-fragile model in int4: written, marked failing, exit 1; the rest is written."""
    from edgestill.export.__main__ import main

    build = _tiny_build(tmp_path, fragile_model(tiny_llama_dir, tmp_path / "fragile"))
    recipe = _tiny_recipe(tmp_path)
    assert main([str(recipe), "export.precisions=[fp32,int4]", "--build-root", str(tmp_path / "build")]) == 1
    int4 = Bundle.open(build / "bundle-int4").manifest
    assert int4["quality_floor"]["passed"] is False and int4["quality"]["top1_agreement_vs_fp32"] < 0.95
    assert Bundle.open(build / "bundle-fp32").manifest["quality_floor"]["passed"] is True
    assert Bundle.open(build / "teacher-bundle-fp32").manifest["role"] == "teacher"  # everything else written
    summary = json.loads((build / "export_summary.json").read_text())["bundles"]
    assert [(r["precision"], r["passed"]) for r in summary] == [("fp32", True), ("int4", False), ("fp32", True)]
    out = capsys.readouterr().out
    assert "FAILS its floor 0.95" in out and "tiny-int4" in out.splitlines()[-1]


# ------------------------------------------------------------------ bad input


def _tiny_build(tmp_path, model_dir):
    """build/tiny/ shaped like distill's output, with `model_dir` as both student and teacher."""
    import shutil

    from tests.export.tiny_bundles import PAIRS

    build = tmp_path / "build" / "tiny"
    shutil.copytree(model_dir, build / "student")
    (build / "student" / "distill_report.json").write_text(json.dumps(
        {"task": {"instruction": "Summarize."}, "teacher": {"source": "tiny", "dir": str(model_dir)}}))
    (build / "data").mkdir()
    (build / "data" / "teacher.jsonl").write_text("".join(
        json.dumps({"id": i, "split": "eval", "input": text, "output": answer * 3, "ended": ended}) + "\n"
        for i, (text, answer, ended) in enumerate(PAIRS)))
    return build


def fragile_build_with_train_split(tmp_path, tiny_llama_dir):
    """_tiny_build of the fragile model, with 8 train records (what QAT and mixed presets learn from)."""
    from tests.export.tiny_bundles import PAIRS

    build = _tiny_build(tmp_path, fragile_model(tiny_llama_dir, tmp_path / "fragile"))
    with open(build / "data" / "teacher.jsonl", "a") as f:
        for i in range(8):
            text, answer, ended = PAIRS[i % 2]
            f.write(json.dumps({"id": 10 + i, "split": "train", "input": f"{text} ({i})", "output": answer * 3,
                                "ended": ended}) + "\n")
    return build


def _tiny_recipe(tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text("name: tiny\ntask:\n  instruction: Summarize.\n  seed_examples: [{input: a, output: b}]\n")
    return recipe


@pytest.fixture
def student_copy(tmp_path, tiny_llama_dir):
    import shutil

    return Path(shutil.copytree(tiny_llama_dir, tmp_path / "student"))


def _export(model_dir, out, **kw):
    from edgestill.export import ExportSettings, export_bundle
    from tests.export.tiny_bundles import INSTRUCTION, TEXTS

    return export_bundle(model_dir, out, "fp32", ExportSettings(INSTRUCTION, tuple(TEXTS), **kw))


def test_refuses_a_pickle_checkpoint(student_copy, tmp_path):
    (student_copy / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")  # a pickle
    with pytest.raises(UserError, match=r"pickle weights \(pytorch_model.bin\).*safetensors only"):
        _export(student_copy, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("missing", ["model.safetensors", "tokenizer.json", "config.json"])
def test_refuses_a_folder_missing_files(student_copy, tmp_path, missing):
    (student_copy / missing).unlink()
    with pytest.raises(UserError, match=rf"missing {missing}"):
        _export(student_copy, tmp_path / "out")


def test_refuses_an_unsupported_architecture(student_copy, tmp_path):
    config = json.loads((student_copy / "config.json").read_text())
    (student_copy / "config.json").write_text(json.dumps({**config, "architectures": ["BertForMaskedLM"]}))
    with pytest.raises(UserError, match=r"'BertForMaskedLM' is not supported.*supported: LlamaForCausalLM"):
        _export(student_copy, tmp_path / "out")


def test_refuses_an_existing_folder_unless_overwrite(tiny_llama_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match=r"out exists and is not an up-to-date fp32 bundle.*--overwrite"):
        _export(tiny_llama_dir, out)
    assert (out / "notes.txt").read_text() == "mine"
    _export(tiny_llama_dir, out, overwrite=True)
    assert not (out / "notes.txt").exists() and Bundle.open(out).manifest["precision"] == "fp32"


def test_refuses_a_stale_bundle_of_other_weights(fp32_bundle, student_copy, tmp_path):
    import shutil

    out = Path(shutil.copytree(fp32_bundle, tmp_path / "bundle-fp32"))
    config = json.loads((student_copy / "config.json").read_text())
    (student_copy / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 1e-6}))
    with pytest.raises(UserError, match=r"other weights \(stale\)"):
        _export(student_copy, out)


# ------------------------------------------------------------------ onnxruntime-genai runs the bundle


@pytest.mark.parametrize("which", ["fp32_bundle", "int8_bundle", "fp16_bundle"])
def test_onnxruntime_genai_greedy_equals_our_runtime(which, request):
    import onnxruntime_genai as og

    from edgestill.runtime import Generator

    path = request.getfixturevalue(which)
    bundle = Bundle.open(path)
    ours = Generator(bundle, threads=1)
    model = og.Model(str(path))
    compared = 0
    for text in ["The council voted to expand bike lanes.", "Café owners say the rules are costly.", "Hi",
                 "Tickets will be answered on Monday."]:
        ids = bundle.encode(text)
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(ids) + 24, do_sample=False)
        gen = og.Generator(model, params)
        gen.append_tokens(ids)
        theirs = []
        while not gen.is_done():
            gen.generate_next_token()
            theirs.append(int(gen.get_next_tokens()[0]))
        theirs = theirs[:theirs.index(2)] if 2 in theirs else theirs  # ours stops before eos
        assert theirs == list(ours.stream_ids(ids, 24))
        compared += len(theirs)
    assert compared >= 24  # a random tiny model may answer one prompt with eos at once, not all


def test_fp16_bundle_runs_past_the_first_step_and_keeps_fp32_choices(fp16_bundle, fp32_bundle):
    """The builder's fp16 CPU graph, with its misleading shape annotations dropped (export/onnx_build.py),
    decodes many tokens with an fp16 KV cache, at half the fp32 bytes, within the fp16 floor."""
    from edgestill.runtime import Generator

    model = onnx.load(str(fp16_bundle / "model.onnx"), load_external_data=False)
    assert len(model.graph.value_info) == 0
    weights = {onnx.helper.tensor_dtype_to_np_dtype(t.data_type).name for t in model.graph.initializer
               if len(t.dims) == 2}
    assert weights == {"float16"}
    m = Bundle.open(fp16_bundle).manifest
    assert m["quality_floor"]["passed"] and m["quality"]["top1_agreement_vs_fp32"] >= 0.99
    size = {b: (b / "model.onnx.data").stat().st_size for b in (fp16_bundle, fp32_bundle)}
    assert 0.45 < size[fp16_bundle] / size[fp32_bundle] < 0.55
    gen = Generator(Bundle.open(fp16_bundle), threads=1)
    assert gen.model.kv_dtype == np.float16
    assert len(list(gen.stream_ids(gen.encode("The council voted."), 40, ignore_eos=True))) == 40


@pytest.mark.parametrize("precision", ["int8-b16", "int8-b32", "int4-b64", "int4-kquant", "int4-kquant-mixed"])
def test_every_other_preset_exports_a_runnable_bundle(precision, tiny_llama_dir, tmp_path):
    """Each named preset builds, validates and records its settings (fp32/int8/int4: fixtures above)."""
    from edgestill.export import ExportSettings, export_bundle
    from edgestill.export.quantize import PRESETS
    from tests.export.tiny_bundles import INSTRUCTION, PAIRS, TEXTS

    m = export_bundle(tiny_llama_dir, tmp_path / precision, precision,
                      ExportSettings(INSTRUCTION, tuple(TEXTS[:1]), quality_pairs=tuple(PAIRS)))
    wanted = PRESETS[precision].quantization
    assert m["precision"] == precision and m["quantization"]["algorithm"] == wanted["algorithm"]
    nbits = [n for n in graph_ops(tmp_path / precision) if n.op_type == "MatMulNBits"]
    attrs = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in nbits]
    assert {a["block_size"] for a in attrs} == {wanted["block_size"]} and {a["accuracy_level"] for a in attrs} == {4}
    head_bits = next(a["bits"] for n, a in zip(nbits, attrs) if n.name.startswith("/lm_head/"))
    assert head_bits == (8 if precision in ("int8-b16", "int8-b32", "int4-kquant-mixed") else 4)
    assert m["quality_floor"]["floor"] == PRESETS[precision].floor and "perplexity_teacher_text" in m["quality"]


def test_int4_qat_preset_runs_the_pass_and_its_simulation_is_the_bundle(tmp_path, tiny_llama_dir, capsys):
    """The fragile model (see fragile_model) through `edgestill export` with int4-gptq and int4-qat: the
    QAT pass starts from GPTQ's rounding (the copy int4-gptq was built from), runs on the train split
    and lowers the simulated int4 model's KL to fp32; the top-1 agreement it simulated in PyTorch
    before and after the pass is what the int4-gptq and int4-qat bundles measure in onnxruntime (so
    the pass trains for the bundle's real grid). On the real student: README.
    export.bitsandbytes adds the student under bitsandbytes int8/nf4 in PyTorch, scored the same way."""
    from edgestill.export.__main__ import main

    build = fragile_build_with_train_split(tmp_path, tiny_llama_dir)
    args = [str(_tiny_recipe(tmp_path)), "export.precisions=[int4-gptq,int4-qat]", "export.qat_steps=12",
            "export.qat_lr=1e-4", "export.bitsandbytes=[int8,nf4]", "--build-root", str(tmp_path / "build")]
    assert main(args) == 1  # both below the 0.95 floor: the model is built to be fragile
    plain = Bundle.open(build / "bundle-int4-gptq").manifest
    qat = Bundle.open(build / "bundle-int4-qat").manifest
    assert qat["qat"]["start"]["method"].startswith("GPTQ")
    assert qat["source"]["model_dir"] == str((build / "student-int4-qat").resolve())
    sim, kl = qat["qat"]["simulated_top1_vs_fp32"], qat["qat"]["simulated_kl_vs_fp32"]
    assert kl["after"] < kl["before"]
    assert abs(sim["before"] - plain["quality"]["top1_agreement_vs_fp32"]) <= 0.02
    assert abs(sim["after"] - qat["quality"]["top1_agreement_vs_fp32"]) <= 0.02
    summary = json.loads((build / "export_summary.json").read_text())
    assert summary["bundles"][1]["qat_simulated_top1_vs_fp32"] == sim
    bnb = summary["pytorch_bitsandbytes"]  # the student in PyTorch under bitsandbytes, scored the same way
    assert bnb["int8"]["kl_vs_fp32"] < bnb["nf4"]["kl_vs_fp32"] and bnb["nf4"]["top1_agreement_vs_fp32"] < 1
    assert bnb["int8"]["positions"] == qat["quality"]["quality_positions"]
    assert "bitsandbytes nf4: top-1 vs fp32" in capsys.readouterr().out
