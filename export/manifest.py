"""manifest.json for a bundle: the model's I/O and shapes, tokens, prompt, files and results.

`describe_model` reads the builder's genai_config.json and the ONNX graph (without its weights);
`prompt_template` renders the model's own chat template around a sentinel user message;
`file_table` hashes every file but manifest.json. `write_manifest` writes it atomically, and is
called last, so a folder with a manifest.json is a finished bundle.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx

from edgestill.files import atomic_write_json, sha256_file
from edgestill.runtime.bundle import FORMAT, FORMAT_VERSION, MANIFEST

TOOL_VERSION = "0.1.0"
_SENTINEL = "@@EDGESTILL_USER_MESSAGE@@"
_KV_DTYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16"}


def describe_model(bundle_dir: Path) -> tuple[dict, dict]:
    """(manifest["model"], manifest["tokens"]) from genai_config.json and model.onnx."""
    genai = json.loads((bundle_dir / "genai_config.json").read_text())["model"]
    dec = genai["decoder"]
    graph = onnx.load(str(bundle_dir / dec["filename"]), load_external_data=False).graph
    past = next(i for i in graph.input if i.name.startswith("past_key_values."))
    eos = genai["eos_token_id"]
    model = {"onnx": dec["filename"], "inputs": [i.name for i in graph.input],
             "outputs": [o.name for o in graph.output], "num_layers": dec["num_hidden_layers"],
             "num_kv_heads": dec["num_key_value_heads"], "head_dim": dec["head_size"],
             "kv_dtype": _KV_DTYPES[past.type.tensor_type.elem_type],
             "kv_layout": "batch,kv_heads,seq,head_dim", "vocab_size": genai["vocab_size"],
             "context_length": genai["context_length"]}
    tokens = {"eos_token_ids": eos if isinstance(eos, list) else [eos],
              "bos_token_id": genai.get("bos_token_id"), "pad_token_id": genai.get("pad_token_id")}
    return model, tokens


def prompt_template(model_dir: Path) -> str:
    """The model's chat prompt for one user message, with `{user}` where the message goes."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    if not tok.chat_template:
        return "{user}"
    text = tok.apply_chat_template([{"role": "user", "content": _SENTINEL}], tokenize=False,
                                   add_generation_prompt=True)
    if text.count(_SENTINEL) != 1:
        raise RuntimeError(f"{model_dir}: chat template does not place the user message once")
    return text.replace(_SENTINEL, "{user}")


def file_table(bundle_dir: Path) -> dict:
    """{name: {"sha256", "bytes"}} for every file in the folder except manifest.json."""
    return {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
            for p in sorted(bundle_dir.iterdir()) if p.is_file() and p.name != MANIFEST}


def write_manifest(bundle_dir: Path, fields: dict) -> dict:
    """Write manifest.json (header + `fields` + file table) atomically; return it."""
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "tool_version": TOOL_VERSION,
                **fields, "files": file_table(bundle_dir)}
    atomic_write_json(bundle_dir / MANIFEST, manifest)
    (bundle_dir / MANIFEST).chmod(0o644)  # atomic_write_* leaves mkstemp's 0600
    return manifest
