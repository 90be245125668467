"""Shared fixtures: the real teacher's folder (converted once, cached) and tiny random models.

Tiny models are built from configs (2 layers, hidden 64) with the real teacher's tokenizer, so
tests are fast yet every tokenizer/chat-template path is the real one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_CONFIG = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, head_dim=16, max_position_embeddings=512, rms_norm_eps=1e-5,
    tie_word_embeddings=True, rope_theta=100000.0,
)


@pytest.fixture(scope="session")
def teacher_dir() -> Path:
    """The bundled SmolLM2-135M-Instruct as an HF folder (GGUF converted once into the cache)."""
    from edgestill.distill.teacher import teacher_dir as resolve

    return resolve("smollm2-135m-instruct")


def make_tiny_llama(out: Path, teacher_dir: Path, num_layers: int = 2, seed: int = 0) -> Path:
    """Save a random 2-layer, hidden-64 Llama with the teacher's tokenizer to `out`."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(teacher_dir)
    cfg = LlamaConfig(**{**TINY_CONFIG, "num_hidden_layers": num_layers}, vocab_size=len(tok),
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).eval()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, teacher_dir) -> Path:
    """A random tiny Llama (2 layers, hidden 64) saved as an HF folder, shared by the session."""
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), teacher_dir)


@pytest.fixture(scope="session")
def fp32_bundle(tmp_path_factory, tiny_llama_dir) -> Path:
    """The tiny model's fp32 bundle (exported once per session; see tests/export/tiny_bundles.py)."""
    from tests.export.tiny_bundles import tiny_bundle

    return tiny_bundle(tmp_path_factory, tiny_llama_dir, "fp32")


@pytest.fixture(scope="session")
def int8_bundle(tmp_path_factory, tiny_llama_dir) -> Path:
    """The tiny model's int8 bundle (exported once per session)."""
    from tests.export.tiny_bundles import tiny_bundle

    return tiny_bundle(tmp_path_factory, tiny_llama_dir, "int8")


@pytest.fixture(scope="session")
def fp16_bundle(tmp_path_factory, tiny_llama_dir) -> Path:
    """The tiny model's fp16 bundle (exported once per session)."""
    from tests.export.tiny_bundles import tiny_bundle

    return tiny_bundle(tmp_path_factory, tiny_llama_dir, "fp16")


def write_tiny_recipe(root: Path, name: str, teacher_source: Path, texts: list[str], **sections: dict) -> Path:
    """Write `root/<name>.yaml`: a recipe on `teacher_source` whose inputs are `texts` (as the user's own
    inputs file), with `sections` ({"task": {...}, "distill": {...}, ...}) merged over the base."""
    import yaml

    (root / "inputs.txt").write_text("\n".join(texts) + "\n")
    recipe = {"name": name,
              "task": {"instruction": "Summarize.", "seed_examples": [{"input": texts[0], "output": "A summary."}],
                       "inputs": "inputs.txt"},
              "teacher": {"source": str(teacher_source)}}
    for section, values in sections.items():
        if isinstance(values, dict):
            recipe.setdefault(section, {}).update(values)
        else:  # a top-level scalar such as device
            recipe[section] = values
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path
