"""`student.base` refused in one line when the recipe loads, before any work: missing, not a model,
pickle weights, an architecture export cannot build, a context shorter than the task, and choices
that contradict it. A .gguf base is read from its header and converted once to the cache."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgestill.errors import UserError
from edgestill.recipe import load_recipe
from tests.conftest import write_tiny_recipe

ROOT = Path(__file__).resolve().parents[2]
TEXTS = ["The ferry to the island was cancelled twice this week because of the storm."]


def recipe_with(root: Path, teacher: Path, base, **sections) -> Path:
    return write_tiny_recipe(root, "b", teacher, TEXTS, student={"base": str(base), **sections.pop("student", {})},
                             distill={"loss": {"kind": "sft", "alpha": 1.0}, **sections.pop("distill", {})}, **sections)


def copy_base(tiny_llama_dir: Path, out: Path, **config) -> Path:
    shutil.copytree(tiny_llama_dir, out)
    cfg = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**cfg, **config}))
    return out


def test_a_usable_base_sets_init_and_keeps_all_its_layers(tmp_path, tiny_llama_dir):
    recipe = load_recipe(recipe_with(tmp_path, tiny_llama_dir, tiny_llama_dir))
    assert recipe.student.init == "base" and recipe.student.base == str(tiny_llama_dir)
    assert recipe.student.layers is None  # all of the base's, resolved when the student is built
    listed = load_recipe(recipe_with(tmp_path, tiny_llama_dir, tiny_llama_dir, student={"layers": [1]}))
    assert listed.student.layers == [1]


@pytest.mark.parametrize("case, message", [
    ("missing", r"student.base: .*missing-base not found"),
    ("no_config", r"has no config.json"),
    ("pickle_only", r"holds pickle weights only \(pytorch_model.bin\)"),
    ("pickle_file", r"is a pickle checkpoint"),
    ("other_file", r"neither a model folder nor a .gguf file"),
    ("bad_gguf", r"does not start with the GGUF magic number"),
    ("architecture", r"architecture 'GPT2LMHeadModel' is not one export can build; supported: LlamaForCausalLM"),
    ("context", r"its context is 128 tokens, shorter than the task needs \(272"),
    ("random", r"student.init: random and student.base contradict"),
    ("hidden_copied", r"distill.loss.hidden_map: copied .* set distill.loss.hidden_map=spread"),
])
def test_a_base_that_cannot_work_is_one_line_before_any_work(tmp_path, tiny_llama_dir, case, message):
    sections = {}
    if case == "missing":
        base = tmp_path / "missing-base"
    elif case == "no_config":
        base = tmp_path / "empty"
        base.mkdir()
    elif case == "pickle_only":
        base = copy_base(tiny_llama_dir, tmp_path / "pickled")
        for f in base.glob("*.safetensors"):
            f.rename(base / "pytorch_model.bin")
    elif case in ("pickle_file", "other_file", "bad_gguf"):
        base = tmp_path / {"pickle_file": "model.pt", "other_file": "model.onnx", "bad_gguf": "model.gguf"}[case]
        base.write_bytes(b"not a model")
    elif case == "architecture":
        base = copy_base(tiny_llama_dir, tmp_path / "gpt2", architectures=["GPT2LMHeadModel"])
    elif case == "context":
        base = copy_base(tiny_llama_dir, tmp_path / "short", max_position_embeddings=128)
        sections = {"task": {"max_input_tokens": 160, "max_output_tokens": 48}}
    elif case == "random":
        base, sections = tiny_llama_dir, {"student": {"init": "random"}}
    else:
        base = tiny_llama_dir
        sections = {"distill": {"loss": {"kind": "sft", "alpha": 1.0, "hidden_states": 1.0}}}
    with pytest.raises(UserError, match=message):
        load_recipe(recipe_with(tmp_path, tiny_llama_dir, base, **sections))


def test_the_command_exits_2_with_one_line(tmp_path, tiny_llama_dir):
    recipe = recipe_with(tmp_path, tiny_llama_dir, tmp_path / "nowhere")
    done = subprocess.run([sys.executable, "-m", "edgestill.cli", "distill", str(recipe), "--build-root",
                           str(tmp_path / "build")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "student.base" in done.stderr
    assert not (tmp_path / "build").exists()


def test_a_gguf_base_is_read_from_its_header_and_converted_once(tmp_path, tiny_llama_dir, monkeypatch):
    from edgestill.distill.base import base_dir
    from edgestill.export.gguf_file import write_gguf
    from edgestill.model_files import base_facts

    gguf = tmp_path / "base.gguf"
    write_gguf(tiny_llama_dir, gguf, "f32", name="base")
    assert base_facts(gguf) == ("LlamaForCausalLM", 512)
    monkeypatch.setenv("EDGESTILL_CACHE", str(tmp_path / "cache"))
    recipe = load_recipe(recipe_with(tmp_path, tiny_llama_dir, gguf))
    folder = base_dir(recipe)
    assert folder.is_relative_to(tmp_path / "cache") and (folder / "config.json").is_file()
    stamp = (folder / "config.json").stat().st_mtime_ns
    assert base_dir(recipe) == folder and (folder / "config.json").stat().st_mtime_ns == stamp  # once
    with pytest.raises(UserError, match="its context is 512 tokens"):
        load_recipe(recipe_with(tmp_path, tiny_llama_dir, gguf, task={"max_input_tokens": 400,
                                                                     "max_output_tokens": 100}))
