"""Bundle.open: accepts a finished bundle, refuses damaged, missing and foreign ones by name."""

from __future__ import annotations

import json
import shutil

import pytest

from edgestill.errors import UserError
from edgestill.runtime import Bundle, BundleError


@pytest.fixture
def bundle_copy(fp32_bundle, tmp_path):
    out = tmp_path / "bundle"
    shutil.copytree(fp32_bundle, out)
    return out


def test_open_reads_manifest_and_tokenizer(fp32_bundle):
    bundle = Bundle.open(fp32_bundle)
    assert bundle.path == fp32_bundle and bundle.eos_token_ids == [2]
    assert bundle.tokenizer.decode(bundle.tokenizer.encode("hello world").ids) == "hello world"


def test_format_prompt_wraps_instruction_and_text(fp32_bundle):
    bundle = Bundle.open(fp32_bundle, verify=False)
    prompt = bundle.format_prompt("A {braced} paragraph.")
    assert "Summarize the following paragraph in one sentence.\n\nA {braced} paragraph.<|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    assert bundle.format_prompt("x", raw=True) == "x"
    assert bundle.encode("x")[0] == bundle.tokenizer.token_to_id("<|im_start|>")


def test_refuses_flipped_byte(bundle_copy):
    data = bundle_copy / "model.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match=r"model\.onnx\.data.*sha256.*edgestill export"):
        Bundle.open(bundle_copy)
    assert issubclass(BundleError, UserError)
    Bundle.open(bundle_copy, verify=False)  # an explicit opt-out still opens it


def test_refuses_missing_and_resized_files(bundle_copy):
    (bundle_copy / "tokenizer_config.json").unlink()
    with pytest.raises(BundleError, match=r"tokenizer_config\.json is missing"):
        Bundle.open(bundle_copy)
    with open(bundle_copy / "genai_config.json", "a") as f:
        f.write(" ")
    with pytest.raises(BundleError, match=r"genai_config\.json has \d+ bytes"):
        Bundle.open(bundle_copy)


def test_refuses_no_manifest_and_other_version(bundle_copy, tmp_path):
    with pytest.raises(BundleError, match="no such folder"):
        Bundle.open(tmp_path / "nowhere")
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    (bundle_copy / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(BundleError, match="version 99"):
        Bundle.open(bundle_copy)
    (bundle_copy / "manifest.json").unlink()
    with pytest.raises(BundleError, match="no manifest.json"):
        Bundle.open(bundle_copy)


def test_each_damage_has_its_own_error_type(bundle_copy):
    from edgestill.runtime import (
        ChecksumError,
        FormatVersionError,
        Generator,
        ManifestError,
        MissingFileError,
        ModelLoadError,
        RuntimeFailure,
        TokenizerError,
    )

    model = bundle_copy / "model.onnx"
    whole = model.read_bytes()
    model.write_bytes(whole[: len(whole) // 3])  # truncated, as by an interrupted copy
    with pytest.raises(ChecksumError, match=r"model\.onnx has \d+ bytes"):
        Bundle.open(bundle_copy)
    with pytest.raises(ModelLoadError, match=r"cannot load model\.onnx.*re-export"):
        Generator(Bundle.open(bundle_copy, verify=False))
    model.unlink()
    with pytest.raises(MissingFileError, match=r"model\.onnx is missing"):
        Generator(Bundle.open(bundle_copy, verify=False))
    model.write_bytes(whole)

    tokenizer = bundle_copy / "tokenizer.json"
    text = tokenizer.read_bytes()
    tokenizer.write_bytes(text[:100])
    with pytest.raises(TokenizerError, match=r"tokenizer\.json cannot be read"):
        Bundle.open(bundle_copy, verify=False)
    tokenizer.unlink()
    with pytest.raises(TokenizerError, match=r"tokenizer\.json is missing"):
        Bundle.open(bundle_copy)
    tokenizer.write_bytes(text)

    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    (bundle_copy / "manifest.json").write_text(json.dumps({**manifest, "format_version": 2}))
    with pytest.raises(FormatVersionError, match="version 2.*re-export"):
        Bundle.open(bundle_copy)
    (bundle_copy / "manifest.json").write_text(json.dumps({**manifest, "model": {"onnx": "model.onnx"}}))
    with pytest.raises(ManifestError, match=r"lacks model\.num_kv_heads"):
        Bundle.open(bundle_copy)
    (bundle_copy / "manifest.json").write_text("[1, 2")
    with pytest.raises(ManifestError, match="not valid JSON"):
        Bundle.open(bundle_copy)
    for cls in (ChecksumError, FormatVersionError, ManifestError, MissingFileError, ModelLoadError, TokenizerError):
        assert issubclass(cls, BundleError) and issubclass(cls, RuntimeFailure) and issubclass(cls, UserError)


def test_reads_chat_template_and_special_tokens(fp32_bundle):
    bundle = Bundle.open(fp32_bundle, verify=False)
    assert "messages" in bundle.chat_template
    assert bundle.special_tokens["eos_token"] == "<|im_end|>"
