"""GGUF out: the tiny student written as GGUF with the `gguf` package, run in real llama.cpp
(llama-cpp-python, compiled by `make test`'s venv) against PyTorch and our runtime's fp32 bundle,
measured by the benchmark's llama.cpp engine; damaged files refused with one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgestill.errors import UserError
from edgestill.export.bundle import ExportSettings
from edgestill.export.gguf_bundle import export_gguf
from edgestill.export.gguf_file import read_gguf_header, write_gguf
from edgestill.export.validate import Reference
from edgestill.files import sha256_file
from tests.export.tiny_bundles import INSTRUCTION, PAIRS, TEXTS

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is built by `make test` (cmake + g++)")


def settings(**kw) -> ExportSettings:
    return ExportSettings(INSTRUCTION, tuple(TEXTS), threads=2, name="tiny-gguf", labels=("positive", "negative"),
                          quality_pairs=tuple(PAIRS), **kw)


@pytest.fixture(scope="module")
def reference(tiny_llama_dir) -> Reference:
    return Reference(tiny_llama_dir)


@pytest.fixture(scope="module")
def trimmed_dir(tmp_path_factory, tiny_llama_dir) -> Path:
    """The tiny student with its vocabulary trimmed to the eval texts' tokens (as distill does)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from edgestill.distill.vocab import plan_trim, trim_model, trimmed_tokenizer
    from edgestill.tensors import chat_prompt, user_message

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    texts = [chat_prompt(tok, user_message(INSTRUCTION, t)) for t in TEXTS]
    keep = plan_trim(tok, texts)
    out = tmp_path_factory.mktemp("trimmed")
    trim_model(model, keep).save_pretrained(out)
    trimmed_tokenizer(tok, keep).save_pretrained(out)
    return out


def test_f16_matches_pytorch_and_the_fp32_bundle_token_for_token(tmp_path, tiny_llama_dir, reference, fp32_bundle):
    m = export_gguf(tiny_llama_dir, tmp_path / "gguf-f16", "gguf-f16", settings(), reference, fp32_bundle)
    v = m["validation"]
    assert v["tokenizer_identical"] and v["greedy_tokens_identical"] and v["greedy_answers_identical"]
    assert v["greedy_reference"] == "runtime fp32 bundle"
    assert v["max_abs_logit_diff"] < 0.05 and v["top1_agreement_vs_fp32"] >= 0.99
    assert v["agreement_on"] == "teacher answers" and v["sequences"] == len(PAIRS)
    assert m["quality_floor"]["passed"] and m["precision"] == "gguf-f16"
    folder = tmp_path / "gguf-f16"
    assert sorted(p.name for p in folder.iterdir()) == ["Modelfile", "manifest.json", "model.gguf"]
    assert all(sha256_file(folder / n) == f["sha256"] for n, f in m["files"].items())
    meta = read_gguf_header(folder / "model.gguf")["metadata"]
    assert meta["general.architecture"] == "llama" and meta["tokenizer.ggml.eos_token_id"] == 2
    assert "<|im_start|>" in meta["tokenizer.chat_template"] and meta["edgestill.task.instruction"] == INSTRUCTION
    assert not list(tmp_path.glob(".gguf-*"))  # the temporary folder was renamed


@pytest.mark.parametrize("precision, floor", [("gguf-q8_0", 0.98), ("gguf-q4_0", 0.90)])
def test_quantized_presets_carry_their_agreement(tmp_path, tiny_llama_dir, reference, fp32_bundle, precision, floor):
    m = export_gguf(tiny_llama_dir, tmp_path / precision, precision, settings(), reference, fp32_bundle)
    v = m["validation"]
    assert v["tokenizer_identical"] and 0 < v["top1_agreement_vs_fp32"] <= 1
    assert m["quality_floor"] == {"metric": "top1_agreement_vs_fp32", "floor": floor,  # no logit tolerance
                                  "value": v["top1_agreement_vs_fp32"], "passed": v["top1_agreement_vs_fp32"] >= floor}
    size = (tmp_path / precision / "model.gguf").stat().st_size
    assert m["gguf"]["tensor_types"].get(precision.removeprefix("gguf-").upper()) and size > 0


def test_trimmed_vocabulary_tokenizes_and_decodes_as_our_runtime(tmp_path, trimmed_dir):
    """A trimmed vocabulary (kept ids renumbered, merges pruned) in llama.cpp's BPE: the same prompt ids
    and the same greedy tokens as PyTorch on the trimmed student."""
    ref = Reference(trimmed_dir)
    m = export_gguf(trimmed_dir, tmp_path / "gguf-f16", "gguf-f16", settings(), ref)
    v = m["validation"]
    assert m["gguf"]["n_vocab"] < 5000 and v["tokenizer_identical"] and v["greedy_tokens_identical"]
    assert v["greedy_reference"] == "PyTorch fp32"


def test_an_up_to_date_folder_is_kept_and_a_foreign_one_refused(tmp_path, tiny_llama_dir, reference, trimmed_dir):
    out = tmp_path / "gguf-q8_0"
    first = export_gguf(tiny_llama_dir, out, "gguf-q8_0", settings(), reference)
    stamp = (out / "model.gguf").stat().st_mtime_ns
    assert export_gguf(tiny_llama_dir, out, "gguf-q8_0", settings(), reference) == first
    assert (out / "model.gguf").stat().st_mtime_ns == stamp
    with pytest.raises(UserError, match="holds another model or preset; pass --overwrite"):
        export_gguf(trimmed_dir, out, "gguf-q8_0", settings(), Reference(trimmed_dir))


def test_damaged_files_are_refused_with_one_line(tmp_path, tiny_llama_dir):
    good = tmp_path / "good.gguf"
    write_gguf(tiny_llama_dir, good, "q8_0")
    data = good.read_bytes()
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="truncated"):
        read_gguf_header(truncated)
    magic = tmp_path / "magic.gguf"
    magic.write_bytes(b"GGML" + data[4:])
    with pytest.raises(UserError, match="not a GGUF file"):
        read_gguf_header(magic)


def test_tensors_that_do_not_match_the_metadata_are_refused(tmp_path):
    import gguf

    path = tmp_path / "mismatch.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_embedding_length(8)
    writer.add_token_list(["a", "b", "c"])
    writer.add_tensor("token_embd.weight", np.zeros((3, 8), np.float32))
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(8, np.float32))  # blk.1 is missing
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(UserError, match="metadata says 2 blocks but the file holds tensors for 1"):
        read_gguf_header(path)


def test_an_architecture_without_gguf_preset_leaves_no_file(tmp_path, tiny_llama_dir):
    other = Path(shutil.copytree(tiny_llama_dir, tmp_path / "qwen"))
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "architectures": ["Qwen2ForCausalLM"]}))
    with pytest.raises(UserError, match="Qwen2ForCausalLM.*has no GGUF preset"):
        write_gguf(other, tmp_path / "out" / "model.gguf", "f16")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_the_benchmark_runs_the_gguf_in_llama_cpp(tmp_path, tiny_llama_dir, reference):
    from edgestill.benchmarks.measure import measure_bundle

    out = tmp_path / "gguf-q8_0"
    export_gguf(tiny_llama_dir, out, "gguf-q8_0", settings(), reference)
    rec = measure_bundle(out, threads=1, prompt_tokens=8, gen_tokens=3, repetitions=2, engine="llama.cpp", warmup=0)
    assert rec["status"] == "ok" and rec["engine"] == "llama.cpp" and rec["engine_version"]
    assert rec["precision"] == "gguf-q8_0" and rec["name"] == "tiny-gguf" and rec["decode_tok_s_p50"] > 0
    assert rec["ttft_ms_p50"] > 0 and rec["peak_rss_mb"] > 0 and rec["file_bytes"] > 0
    bare = measure_bundle(out / "model.gguf", threads=1, prompt_tokens=8, gen_tokens=2, repetitions=1,
                          engine="llama.cpp", warmup=0, name="file", role="teacher")
    assert bare["precision"] == "gguf-q8_0" and bare["params"] > 0 and bare["role"] == "teacher"


def test_label_answers_in_llama_cpp_match_our_runtime(tmp_path, tiny_llama_dir, reference, fp32_bundle):
    """A label task's GGUF answers by the labels' likelihood (+ end token), as Generator.choose does on
    the fp32 bundle; free text greedily, as Generator.generate; a fields task's JSON as Generator.extract."""
    from edgestill.benchmarks.gguf_quality import gguf_outputs
    from edgestill.runtime import Bundle, Generator

    folder = tmp_path / "gguf-f16"
    export_gguf(tiny_llama_dir, folder, "gguf-f16", settings(), reference, fp32_bundle)
    records = [{"input": t} for t in TEXTS]
    gen = Generator(Bundle.open(fp32_bundle), threads=2)
    bundle_prompt = gen.bundle.format_prompt
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["prompt"]["template"].replace("{user}", f"{INSTRUCTION}\n\n{TEXTS[0]}") == bundle_prompt(TEXTS[0])
    labels = gguf_outputs(folder, records, 8, 2)
    assert labels == [gen.choose(t, choices=["positive", "negative"]).text for t in TEXTS]
    free = dict(manifest, task={})
    (folder / "manifest.json").write_text(json.dumps(free))
    assert gguf_outputs(folder, records, 8, 2) == [gen.generate(t, max_new_tokens=8, temperature=0.0).strip()
                                                   for t in TEXTS]


class Traced:
    """A runtime-style model that records the logits of every step (`runtime.fields.decode`'s view)."""

    def __init__(self, model):
        self.model, self.logits, self.picked = model, [], []

    def new_cache(self, batch, capacity):
        self.cache = self.model.new_cache(batch, capacity)
        return self

    def prefill(self, row, ids):
        self.logits.append(np.array(self.cache.prefill(row, ids)))
        return self.logits[-1]

    def step(self, tokens):
        self.picked.append(int(tokens[0]))
        out = self.cache.step(tokens)
        self.logits.append(np.array(out[0]))
        return out


def test_fields_answers_in_llama_cpp_follow_our_runtime(tmp_path, tiny_llama_dir, reference, fp32_bundle):
    """A fields task's GGUF answers with our JSON automaton over llama.cpp's logits: the token bytes are
    the bundle's, every step's logits are our runtime's within engine noise, and llama.cpp's pick is
    our pick or, where a random model's allowed tokens tie, one within that noise of it."""
    from llama_cpp import Llama

    from edgestill.benchmarks.gguf_quality import (
        LlamaModel,
        fields_guide,
        gguf_outputs,
        prompt_text,
    )
    from edgestill.runtime import Bundle, Generator
    from edgestill.runtime.fields import decode, token_pieces

    folder = tmp_path / "gguf-f32"
    export_gguf(tiny_llama_dir, folder, "gguf-f32", settings(), reference, fp32_bundle)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["quality_floor"]["passed"]
    gen = Generator(Bundle.open(fp32_bundle), threads=2)
    llm = Llama(model_path=str(folder / "model.gguf"), n_ctx=512, logits_all=True, verbose=False)
    guide = fields_guide(llm, ["day", "place"])
    assert guide.table.pieces == token_pieces(gen.bundle.tokenizer)  # long tokens too (over 32 bytes)
    ours_guide = gen.fields_guide(["day", "place"])
    for text in TEXTS:
        ids = llm.tokenize(prompt_text(manifest, text).encode(), add_bos=False, special=True)
        assert ids == gen.encode(text)
        ours, theirs = Traced(gen.model), Traced(LlamaModel(llm))
        decode(ours, ids, ours_guide, 24)
        decode(theirs, ids, guide, 24)
        for a, b, x, y in zip(ours.picked, theirs.picked, ours.logits, theirs.logits):
            assert np.abs(x - y).max() < 0.01  # the same position's logits
            if a != b:  # the first divergence: a near-tie in our own logits
                assert abs(x[a] - x[b]) < 0.01
                break
    llm.close()
    records = [{"input": t} for t in TEXTS]
    for verbatim in (False, True):
        (folder / "manifest.json").write_text(json.dumps(dict(manifest, task={"fields": ["day", "place"],
                                                                             "verbatim": verbatim})))
        got = [json.loads(g) for g in gguf_outputs(folder, records, 24, 2)]
        assert all(list(g) == ["day", "place"] for g in got)
        if verbatim:
            assert all(v is None or v in t for g, t in zip(got, TEXTS) for v in g.values())
