"""A Llama-family student checkpoint → one GGUF file for llama.cpp, Ollama and LM Studio.

    from edgestill.export.gguf_file import write_gguf
    info = write_gguf(Path("build/default/student"), Path("out/model.gguf"), "q8_0", task={...})

Written with the `gguf` package's writer and quantizers (no code from llama.cpp's converter):

- weights: the checkpoint's safetensors (never a pickle), renamed to llama.cpp's tensor names; the
  query and key projections are re-ordered per head from Hugging Face's rotate-half layout to the
  interleaved pairs llama.cpp's Llama rope rotates; norms stay F32, matrices take the preset's type
  (`f32`, `f16`, `q8_0`, `q4_0`; a matrix whose rows do not split into 32-value blocks stays F16; under
  `q4_0` the embedding takes Q8_0, as it also serves as the output head);
- tokenizer: the student's own tokenizer.json (a trimmed vocabulary included): tokens in id order,
  BPE merges, special tokens as control tokens, bos/eos/pad ids, and the pre-tokenizer llama.cpp
  must use (`smollm` for byte-level with single digits, as SmolLM2; `gpt-2` for plain byte-level;
  anything else is refused, since llama.cpp would split text differently);
- the chat template the student was trained with, and the task (`edgestill.task.*`: instruction,
  labels, fields, verbatim) so an app gets them from the file alone.

The file is written to a temporary name beside `out` and renamed at the end: no half file is left.
`read_gguf_header(path)` checks magic, version and that the tensor data the header promises is
all there, for a file from anywhere (a truncated download is refused with one line).
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path

import numpy as np

from edgestill.errors import UserError

GGUF_TYPES = ("f32", "f16", "q8_0", "q4_0")
GGUF_MAGIC = b"GGUF"
ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM")  # the same tensors and rope in llama.cpp's llama arch
BLOCK = 32  # values per Q8_0 / Q4_0 block
LAYER_TENSORS = {  # Hugging Face name inside model.layers.N -> llama.cpp name inside blk.N
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
TOP_TENSORS = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
               "lm_head.weight": "output.weight"}
FILE_TYPE = {"f32": 0, "f16": 1, "q8_0": 7, "q4_0": 2}  # llama.cpp's LLAMA_FTYPE_MOSTLY_*


def interleave_rope(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Rows of a q/k projection from rotate-half order (pairs i, i + d/2 per head) to interleaved
    order (pairs 2i, 2i + 1), which is how llama.cpp's Llama rope reads them."""
    rows, cols = w.shape
    head_dim = rows // n_heads
    return w.reshape(n_heads, 2, head_dim // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def read_config(model_dir: Path) -> dict:
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    arch = (config.get("architectures") or [None])[0]
    if arch not in ARCHITECTURES:
        raise UserError(f"{model_dir / 'config.json'}: architecture {arch!r} has no GGUF preset here; the gguf-* "
                        f"presets write {', '.join(ARCHITECTURES)} (use the ONNX presets for this model)")
    if config.get("attention_bias") or config.get("mlp_bias"):
        raise UserError(f"{model_dir / 'config.json'}: attention or MLP biases have no place in llama.cpp's llama "
                        "tensors; use the ONNX presets for this model")
    scaling = config.get("rope_scaling") or {}
    if scaling and scaling.get("rope_type", scaling.get("type")) not in (None, "default"):
        raise UserError(f"{model_dir / 'config.json'}: rope_scaling {scaling} is not written to GGUF here; "
                        "use the ONNX presets for this model")
    return config


def pre_tokenizer_name(spec: dict, where: Path) -> str:
    """llama.cpp's name for the tokenizer.json's pre-tokenizer, or UserError when it has none."""
    pre = spec.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [p.get("type") for p in parts]
    if kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits") and parts[1].get("use_regex", True):
        return "smollm"
    if kinds == ["ByteLevel"] and parts[0].get("use_regex", True):
        return "gpt-2"
    raise UserError(f"{where}: pre-tokenizer {kinds} has no llama.cpp equivalent known here (known: byte-level, "
                    "byte-level with single digits); use the ONNX presets for this model")


def tokenizer_fields(model_dir: Path, n_vocab: int) -> dict:
    """Tokens (id order), token types, merges and the pre-tokenizer from tokenizer.json."""
    path = model_dir / "tokenizer.json"
    spec = json.loads(path.read_text(encoding="utf-8"))
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        raise UserError(f"{path}: a {model.get('type')} tokenizer; the gguf-* presets write byte-level BPE only")
    by_id = {i: t for t, i in model["vocab"].items()}
    special = set()
    for added in spec.get("added_tokens", []):
        by_id[added["id"]] = added["content"]
        if added.get("special"):
            special.add(added["id"])
    if len(by_id) > n_vocab or max(by_id) >= n_vocab:
        raise UserError(f"{path}: {len(by_id)} tokens (largest id {max(by_id)}) but the model has {n_vocab} rows")
    tokens = [by_id.get(i, f"[PAD{i}]") for i in range(n_vocab)]
    types = [3 if i in special else (1 if i in by_id else 5) for i in range(n_vocab)]  # normal 1, control 3, unused 5
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return {"tokens": tokens, "types": types, "merges": merges, "pre": pre_tokenizer_name(spec, path)}


def special_ids(model_dir: Path) -> dict:
    """bos / eos / pad ids: generation_config.json first (eos may be a list: the first is llama.cpp's eos,
    every one an end-of-generation token), then config.json."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    gen_path = model_dir / "generation_config.json"
    gen = json.loads(gen_path.read_text(encoding="utf-8")) if gen_path.is_file() else {}
    eos = gen.get("eos_token_id", config.get("eos_token_id"))
    eos = eos if isinstance(eos, list) else [eos] if eos is not None else []
    return {"bos": gen.get("bos_token_id", config.get("bos_token_id")), "eos": eos,
            "pad": gen.get("pad_token_id", config.get("pad_token_id"))}


def chat_template(model_dir: Path) -> str | None:
    path = model_dir / "tokenizer_config.json"
    template = json.loads(path.read_text(encoding="utf-8")).get("chat_template") if path.is_file() else None
    jinja = model_dir / "chat_template.jinja"
    return jinja.read_text(encoding="utf-8") if template is None and jinja.is_file() else template


def tensor_type(name: str, shape: tuple[int, ...], kind: str):
    """The GGML type a tensor is written in under preset `kind`."""
    import gguf

    if len(shape) == 1 or kind == "f32":
        return gguf.GGMLQuantizationType.F32
    if kind == "f16" or shape[-1] % BLOCK:
        return gguf.GGMLQuantizationType.F16
    if kind == "q4_0" and name == "token_embd.weight":
        return gguf.GGMLQuantizationType.Q8_0
    return gguf.GGMLQuantizationType.Q8_0 if kind == "q8_0" else gguf.GGMLQuantizationType.Q4_0


def encoded(array: np.ndarray, qtype) -> np.ndarray:
    """The tensor's bytes (or float array) in `qtype`, through the gguf package's quantizers."""
    import gguf

    if qtype == gguf.GGMLQuantizationType.F32:
        return array.astype(np.float32)
    if qtype == gguf.GGMLQuantizationType.F16:
        return array.astype(np.float16)
    return gguf.quants.quantize(array.astype(np.float32), qtype)


def checkpoint_tensors(model_dir: Path, config: dict):
    """(llama.cpp name, float32 array) for every tensor of the checkpoint, q/k re-ordered for rope."""
    from safetensors.numpy import load_file

    state = {}
    for file in sorted(model_dir.glob("*.safetensors")):
        state.update(load_file(str(file)))  # numpy arrays; bf16 files are refused by safetensors.numpy
    n_heads, n_kv = config["num_attention_heads"], config.get("num_key_value_heads", config["num_attention_heads"])
    for name, array in state.items():
        if name in TOP_TENSORS:
            if name == "lm_head.weight" and config.get("tie_word_embeddings"):
                continue
            yield TOP_TENSORS[name], array.astype(np.float32)
            continue
        if not name.startswith("model.layers."):
            raise UserError(f"{model_dir}: tensor {name} has no llama.cpp name; use the ONNX presets for this model")
        layer, rest = name[len("model.layers."):].split(".", 1)
        if rest not in LAYER_TENSORS:
            raise UserError(f"{model_dir}: tensor {name} has no llama.cpp name; use the ONNX presets for this model")
        array = array.astype(np.float32)
        if rest == "self_attn.q_proj.weight":
            array = interleave_rope(array, n_heads)
        elif rest == "self_attn.k_proj.weight":
            array = interleave_rope(array, n_kv)
        yield f"blk.{layer}.{LAYER_TENSORS[rest]}", array


def add_metadata(writer, config: dict, kind: str, name: str, tok: dict, ids: dict, template: str | None,
                 task: dict) -> None:
    n_heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // n_heads
    writer.add_name(name)
    writer.add_context_length(config.get("max_position_embeddings", 2048))
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(n_heads)
    writer.add_head_count_kv(config.get("num_key_value_heads", n_heads))
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(config.get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-5)))
    writer.add_vocab_size(len(tok["tokens"]))
    writer.add_file_type(FILE_TYPE[kind])
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(tok["pre"])
    writer.add_token_list(tok["tokens"])
    writer.add_token_types(tok["types"])
    writer.add_token_merges(tok["merges"])
    writer.add_add_bos_token(False)  # the chat template writes every special token itself
    writer.add_add_space_prefix(False)
    if ids["bos"] is not None:
        writer.add_bos_token_id(ids["bos"])
    if ids["eos"]:
        writer.add_eos_token_id(ids["eos"][0])
        writer.add_eot_token_id(ids["eos"][0])
    if ids["pad"] is not None:
        writer.add_pad_token_id(ids["pad"])
    if template:
        writer.add_chat_template(template)
    for key, value in task.items():
        if value is None:
            continue
        if isinstance(value, list):
            writer.add_array(f"edgestill.task.{key}", [str(v) for v in value])
        elif isinstance(value, bool):
            writer.add_bool(f"edgestill.task.{key}", value)
        else:
            writer.add_string(f"edgestill.task.{key}", str(value))


def write_gguf(model_dir: Path, out: Path, kind: str, task: dict | None = None, name: str | None = None) -> dict:
    """Write `model_dir` as a `kind` GGUF at `out` (atomically); {"tensor_types", "n_vocab", "pre", "bytes"}."""
    import gguf

    if kind not in GGUF_TYPES:
        raise UserError(f"GGUF type '{kind}' is not written here; choose one of {', '.join(GGUF_TYPES)}")
    config = read_config(model_dir)
    tensors = list(checkpoint_tensors(model_dir, config))
    n_vocab = next(a.shape[0] for n, a in tensors if n == "token_embd.weight")
    tok, ids = tokenizer_fields(model_dir, n_vocab), special_ids(model_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    types: dict[str, str] = {}
    try:
        writer = gguf.GGUFWriter(tmp, "llama")
        add_metadata(writer, config, kind, name or model_dir.name, tok, ids, chat_template(model_dir), task or {})
        for tensor_name, array in tensors:
            qtype = tensor_type(tensor_name, array.shape, kind)
            writer.add_tensor(tensor_name, encoded(array, qtype), raw_dtype=qtype)
            types[qtype.name] = types.get(qtype.name, 0) + 1
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        read_gguf_header(Path(tmp))  # what we wrote reads back whole
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return {"tensor_types": types, "n_vocab": n_vocab, "pre": tok["pre"], "bytes": out.stat().st_size}


def read_gguf_header(path: Path) -> dict:
    """Check a GGUF file before anything loads it: magic, version, and every tensor's data inside the
    file; {"version", "tensors", "metadata"} (metadata: the scalar string/number fields)."""
    import gguf

    if not path.is_file():
        raise UserError(f"{path}: no such GGUF file")
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) < 8 or head[:4] != GGUF_MAGIC:
        raise UserError(f"{path}: not a GGUF file (magic {head[:4]!r}, expected {GGUF_MAGIC!r})")
    version = struct.unpack("<I", head[4:8])[0]
    if version not in (2, 3):
        raise UserError(f"{path}: GGUF version {version}; llama.cpp reads versions 2 and 3")
    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, IndexError, struct.error, OSError) as err:  # numpy memmap past the end, bad counts
        raise UserError(f"{path}: damaged or truncated GGUF ({' '.join(str(err).split())[:200]}); export it again") from None
    size = path.stat().st_size
    for t in reader.tensors:
        if t.data_offset + t.n_bytes > size:
            raise UserError(f"{path}: tensor {t.name} ends past the end of the file (truncated); export it again")
    metadata = {}
    for key, field in reader.fields.items():
        if len(field.types) == 1 and not key.startswith("GGUF."):
            try:
                metadata[key] = field.contents()
            except (ValueError, IndexError):
                continue
    check_tensors_match(path, metadata, {t.name: [int(d) for d in t.shape] for t in reader.tensors},
                        len(reader.fields["tokenizer.ggml.tokens"].data) if "tokenizer.ggml.tokens" in reader.fields else None)
    return {"version": version, "tensors": len(reader.tensors), "metadata": metadata}


def check_tensors_match(path: Path, metadata: dict, shapes: dict[str, list[int]], n_tokens: int | None) -> None:
    """The tensors a llama GGUF's metadata promises: one blk.N per block, an embedding as wide as the model
    and with one row per token."""
    arch = metadata.get("general.architecture")
    blocks, width = metadata.get(f"{arch}.block_count"), metadata.get(f"{arch}.embedding_length")
    layers = {int(n.split(".")[1]) for n in shapes if n.startswith("blk.")}
    if blocks is not None and layers != set(range(int(blocks))):
        raise UserError(f"{path}: metadata says {blocks} blocks but the file holds tensors for {len(layers)}; "
                        "the file does not match its metadata, export it again")
    embd = shapes.get("token_embd.weight")
    if embd is not None and width is not None and embd[0] != int(width):
        raise UserError(f"{path}: token_embd.weight is {embd[0]} wide but the metadata says {width}; export it again")
    if embd is not None and n_tokens is not None and embd[1] != n_tokens:
        raise UserError(f"{path}: token_embd.weight has {embd[1]} rows for {n_tokens} tokens; export it again")
