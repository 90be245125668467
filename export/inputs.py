"""What export accepts: a Hugging Face folder with safetensors weights of a supported architecture.

    from edgestill.export.inputs import check_model_dir, check_out_dir, source_fingerprint
    check_model_dir(Path("build/default/student"))   # UserError naming the problem, else None

Untrusted model files are read as safetensors only: a folder holding a pickle checkpoint
(`pytorch_model.bin`, `*.pt`, `*.pth`, `*.ckpt`, `*.pkl`) is refused, never loaded.
`source_fingerprint` (sha256 over config.json and the weight files) tells whether an existing
bundle was exported from the same weights, so an up-to-date bundle is kept and a stale or
foreign folder is refused unless the caller asks to overwrite it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from edgestill.errors import UserError
from edgestill.files import sha256_file
from edgestill.model_files import SUPPORTED_ARCHITECTURES, pickle_files

REQUIRED_FILES = ("config.json", "tokenizer.json")


def check_model_dir(model_dir: Path) -> None:
    """Raise UserError unless `model_dir` is a safetensors HF folder of a supported architecture."""
    if not model_dir.is_dir():
        raise UserError(f"model folder not found: {model_dir}")
    pickles = pickle_files(model_dir)
    if pickles:
        raise UserError(f"{model_dir}: holds pickle weights ({', '.join(pickles)}); export reads safetensors "
                        "only (pickle files can run code). Re-save with model.save_pretrained(folder) "
                        "(safetensors is the default) and remove the pickle files")
    missing = [name for name in REQUIRED_FILES if not (model_dir / name).is_file()]
    if not list(model_dir.glob("*.safetensors")):
        missing.append("model.safetensors")
    if missing:
        raise UserError(f"{model_dir}: missing {', '.join(missing)}; a student folder needs config.json, "
                        "*.safetensors and tokenizer.json (as written by `edgestill distill`)")
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"{model_dir / 'config.json'}: not valid JSON ({err})") from None
    arch = (config.get("architectures") or [None])[0]
    if arch not in SUPPORTED_ARCHITECTURES:
        raise UserError(f"{model_dir / 'config.json'}: architecture {arch!r} is not supported by export; "
                        f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}")


def source_fingerprint(model_dir: Path) -> str:
    """sha256 over the names and sha256 of config.json and every *.safetensors file."""
    files = [model_dir / "config.json", *sorted(model_dir.glob("*.safetensors"))]
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.name}:{sha256_file(file)}\n".encode())
    return digest.hexdigest()
