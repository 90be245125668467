"""A bundle on disk: manifest.json checked against the files, the tokenizer and the prompt.

    from runtime import Bundle
    bundle = Bundle.open("build/default/bundle-int8")      # verifies every file's size and sha256
    ids = bundle.tokenizer.encode(bundle.format_prompt("Some paragraph"), add_special_tokens=False).ids

`Bundle.open` refuses (with `BundleError`, a `UserError`) a bundle without manifest.json, with
another format version, or whose listed files are missing, of another size or of another
sha256; the message names the bundle, the file and says to re-export. Files not listed in the
manifest are ignored. The layout is described in docs/contracts.md ("The bundle").
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from edgestill.errors import UserError
from edgestill.files import sha256_file

FORMAT = "edgestill-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class BundleError(UserError):
    """A bundle that cannot be used as is; the message names the file and what to do."""


def _redo(path: Path) -> str:
    return f"re-export it with `python -m export RECIPE` (or delete {path} and run export again)"


def verify_files(path: Path, files: dict) -> None:
    """Check each listed file exists with the listed byte size and sha256; raise BundleError."""
    for name, meta in sorted(files.items()):
        file = path / name
        if not file.is_file():
            raise BundleError(f"bundle {path}: file {name} is missing; {_redo(path)}")
        size = file.stat().st_size
        if size != meta.get("bytes"):
            raise BundleError(f"bundle {path}: file {name} has {size} bytes, the manifest says "
                              f"{meta.get('bytes')}; it is damaged or from another export; {_redo(path)}")
        if sha256_file(file) != meta.get("sha256"):
            raise BundleError(f"bundle {path}: file {name} does not match its sha256 in manifest.json; "
                              f"it is damaged or from another export; {_redo(path)}")


def read_manifest(path: Path) -> dict:
    """Read and check the header of `path`/manifest.json; raise BundleError if unusable."""
    file = path / MANIFEST
    if not path.is_dir():
        raise BundleError(f"bundle {path}: no such folder; export one with `python -m export RECIPE`")
    if not file.is_file():
        raise BundleError(f"bundle {path}: no {MANIFEST} (not a bundle, or an export that did not "
                          f"finish); {_redo(path)}")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(f"bundle {path}: {MANIFEST} is not valid JSON ({err}); {_redo(path)}") from None
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"bundle {path}: {MANIFEST} has format {manifest.get('format')!r} version "
                          f"{manifest.get('format_version')!r}, this runtime reads {FORMAT!r} version "
                          f"{FORMAT_VERSION}; {_redo(path)}")
    return manifest


@dataclass
class Bundle:
    """An opened bundle: its folder, manifest and tokenizer."""

    path: Path
    manifest: dict
    tokenizer: Tokenizer

    @classmethod
    def open(cls, path: str | os.PathLike, verify: bool = True) -> "Bundle":
        """Open the bundle folder `path`; with `verify`, hash every listed file first."""
        path = Path(path)
        manifest = read_manifest(path)
        if verify:
            verify_files(path, manifest.get("files", {}))
        tokenizer_file = path / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise BundleError(f"bundle {path}: file tokenizer.json is missing; {_redo(path)}")
        return cls(path=path, manifest=manifest, tokenizer=Tokenizer.from_file(str(tokenizer_file)))

    @property
    def model_path(self) -> Path:
        return self.path / self.manifest["model"]["onnx"]

    @property
    def eos_token_ids(self) -> list[int]:
        return list(self.manifest["tokens"]["eos_token_ids"])

    @property
    def name(self) -> str:
        return self.manifest.get("name", self.path.name)

    def format_prompt(self, text: str, raw: bool = False) -> str:
        """The model's chat prompt for one user message: instruction + "\\n\\n" + text.

        `raw=True` returns `text` unchanged (no template, no instruction).
        """
        if raw:
            return text
        prompt = self.manifest["prompt"]
        instruction = prompt.get("instruction") or ""
        user = f"{instruction}\n\n{text}" if instruction else text
        return prompt["template"].replace("{user}", user)  # not str.format: templates hold braces

    def encode(self, text: str, raw: bool = False) -> list[int]:
        """Token ids of `format_prompt(text, raw)` (special tokens in the template are parsed)."""
        return self.tokenizer.encode(self.format_prompt(text, raw), add_special_tokens=False).ids
