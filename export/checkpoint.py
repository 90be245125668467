"""Writing and reading plain Hugging Face checkpoints for the export transforms (safetensors only).

- `save_checkpoint(model, model_dir, out_dir, records)`: atomic (temp folder + rename), with
  `model_dir`'s tokenizer and config files beside the new weights;
- `load_weights(folder)`: every tensor of a folder's safetensors files, the tied LM head filled in.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from edgestill.files import atomic_write_json

CARRIED = (".json", ".jinja", ".txt", ".model")  # config/tokenizer files copied next to the new weights


def save_checkpoint(model, model_dir: Path, out_dir: Path, records: dict[str, dict] | None = None) -> None:
    """`model` as an HF folder at `out_dir` (safetensors, its config) with `model_dir`'s tokenizer
    and other small files, plus `records` ({file name: JSON object}). Written to a temp folder and
    renamed, so a killed write never leaves a folder that looks whole."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in Path(model_dir).iterdir():
        if f.is_file() and f.suffix in CARRIED and f.name != "config.json":
            shutil.copyfile(f, tmp / f.name)
    model.save_pretrained(tmp, safe_serialization=True)
    for name, record in (records or {}).items():
        atomic_write_json(tmp / name, record)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)


def load_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        out.update(load_file(f))
    if "lm_head.weight" not in out and "model.embed_tokens.weight" in out:  # tied
        out["lm_head.weight"] = out["model.embed_tokens.weight"]
    return out
