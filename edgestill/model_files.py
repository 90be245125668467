"""Which model files the project reads, and the check of a recipe's `student.base`.

    from edgestill.model_files import check_student_base
    path = check_student_base("bases/my-360m", "recipe.yaml", needed_tokens=272)   # UserError, else the path

Model weights are read as safetensors (Hugging Face folders) or GGUF only: a pickle checkpoint
(`pytorch_model.bin`, `*.pt`, `*.pth`, `*.ckpt`, `*.pkl`) can run code when loaded and is refused,
never opened. A student base must be a decoder architecture that export builds
(`SUPPORTED_ARCHITECTURES`), and its context must hold the task's prompt and answer; both are
read from config.json, or from the GGUF header (`general.architecture`, `<arch>.context_length`)
without loading the weights, so a bad base stops the run before any work.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgestill.errors import UserError

# Decoder-only text models that onnxruntime-genai's builder (0.18) exports in the KV-cache
# layout runtime/ runs. Tested here: LlamaForCausalLM (SmolLM2 and its students), Qwen2ForCausalLM.
SUPPORTED_ARCHITECTURES = (
    "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
    "GemmaForCausalLM", "Gemma2ForCausalLM", "PhiForCausalLM", "Phi3ForCausalLM",
    "GraniteForCausalLM", "OlmoForCausalLM", "SmolLM3ForCausalLM",
)
# llama.cpp's general.architecture -> the Hugging Face class transformers loads that GGUF as
GGUF_ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
                      "qwen3": "Qwen3ForCausalLM", "gemma": "GemmaForCausalLM", "gemma2": "Gemma2ForCausalLM",
                      "phi2": "PhiForCausalLM", "phi3": "Phi3ForCausalLM", "granite": "GraniteForCausalLM",
                      "olmo": "OlmoForCausalLM"}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
PROMPT_OVERHEAD = 64  # tokens of instruction and chat template around an input, for the context check


def pickle_files(folder: Path) -> list[str]:
    """Names of the pickle checkpoints in `folder` (refused: loading one can run code)."""
    return sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)


def base_facts(path: Path) -> tuple[str | None, int | None]:
    """(architecture as a Hugging Face class name, context length) of a model folder or GGUF file."""
    if path.suffix == ".gguf":
        return _gguf_facts(path)
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    arch = (config.get("architectures") or [None])[0]
    text = config.get("text_config") or {}
    context = config.get("max_position_embeddings") or config.get("n_positions") or text.get("max_position_embeddings")
    return arch, context


def _gguf_facts(path: Path) -> tuple[str | None, int | None]:
    import gguf

    reader = gguf.GGUFReader(str(path))

    def value(key: str):
        f = reader.fields.get(key)
        return None if f is None else f.contents()

    arch = value("general.architecture")
    context = value(f"{arch}.context_length")
    return GGUF_ARCHITECTURES.get(arch, arch), int(context) if context is not None else None


def check_student_base(path: Path, where: str, needed_tokens: int) -> str:
    """`path` (already resolved) as a string when it is a usable student base; UserError otherwise:
    missing, not a model folder or GGUF, pickle weights, an architecture export cannot build, or a
    context shorter than `needed_tokens`."""
    key = f"{where}: student.base"
    if not path.exists():
        raise UserError(f"{key}: {path} not found; give a local Hugging Face model folder or a .gguf file")
    if path.is_file():
        if path.suffix in PICKLE_SUFFIXES:
            raise UserError(f"{key}: {path} is a pickle checkpoint, which can run code when loaded; give a folder "
                            "with safetensors weights (model.save_pretrained writes them) or a .gguf file")
        if path.suffix != ".gguf":
            raise UserError(f"{key}: {path} is neither a model folder nor a .gguf file")
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                raise UserError(f"{key}: {path} does not start with the GGUF magic number; it is not a GGUF file")
    else:
        if not (path / "config.json").is_file():
            raise UserError(f"{key}: {path} has no config.json; give a Hugging Face model folder (config.json, "
                            "*.safetensors, tokenizer) or a .gguf file")
        pickles = pickle_files(path)
        if pickles and not list(path.glob("*.safetensors")):
            raise UserError(f"{key}: {path} holds pickle weights only ({', '.join(pickles)}), which can run code "
                            "when loaded; re-save it with model.save_pretrained (safetensors is the default)")
        if not list(path.glob("*.safetensors")):
            raise UserError(f"{key}: {path} has no *.safetensors weights")
        if not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
            raise UserError(f"{key}: {path} has no tokenizer (tokenizer.json); the student answers in its own tokens")
    try:
        arch, context = base_facts(path)
    except (OSError, ValueError, KeyError, IndexError) as err:
        raise UserError(f"{key}: {path} cannot be read ({' '.join(str(err).split())[:200]})") from None
    if arch not in SUPPORTED_ARCHITECTURES:
        raise UserError(f"{key}: architecture {arch!r} is not one export can build; supported: "
                        f"{', '.join(SUPPORTED_ARCHITECTURES)}")
    if context is not None and context < needed_tokens:
        raise UserError(f"{key}: its context is {context} tokens, shorter than the task needs ({needed_tokens}: "
                        f"task.max_input_tokens + task.max_output_tokens + {PROMPT_OVERHEAD} for the instruction and "
                        "template); lower those or pick a base with a longer context")
    return str(path)
