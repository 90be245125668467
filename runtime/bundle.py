"""A bundle on disk: manifest.json checked against the files, the tokenizer and the prompt.

    from edgestill.runtime import Bundle
    bundle = Bundle.open("build/default/bundle-int8")      # verifies every file's size and sha256
    ids = bundle.tokenizer.encode(bundle.format_prompt("Some paragraph"), add_special_tokens=False).ids

`Bundle.open` refuses a bundle without manifest.json (`ManifestError`), of another format
version (`FormatVersionError`), whose listed files are missing (`MissingFileError`) or of another
size or sha256 (`ChecksumError`), or whose tokenizer cannot be read (`TokenizerError`); all are
`BundleError`s (runtime/errors.py) and the message names the bundle, the file and says to
re-export. Files not listed in the manifest are ignored. The layout is described in
docs/contracts.md ("The bundle"). The chat template (chat_template.jinja, or tokenizer_config.json's
`chat_template`) and the named special tokens are read here for `runtime.chat_template`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from tokenizers import Tokenizer

from edgestill.files import sha256_file
from edgestill.runtime.errors import (  # noqa: F401 (re-export)
    BundleError,
    ChecksumError,
    FormatVersionError,
    ManifestError,
    MissingFileError,
    TokenizerError,
)

FORMAT = "edgestill-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


REQUIRED = [("model", "onnx"), ("model", "num_kv_heads"), ("model", "head_dim"), ("tokens", "eos_token_ids"),
            ("prompt", "template")]
# the named special tokens transformers passes to a chat template (bos_token, eos_token, ...)
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def _redo(path: Path) -> str:
    return f"re-export it with `edgestill export RECIPE` (or delete {path} and run export again)"


def verify_files(path: Path, files: dict) -> None:
    """Check each listed file exists with the listed byte size and sha256; raise BundleError."""
    for name, meta in sorted(files.items()):
        file = path / name
        if not file.is_file():
            raise MissingFileError(f"bundle {path}: file {name} is missing; {_redo(path)}")
        size = file.stat().st_size
        if size != meta.get("bytes"):
            raise ChecksumError(f"bundle {path}: file {name} has {size} bytes, the manifest says "
                              f"{meta.get('bytes')}; it is damaged or from another export; {_redo(path)}")
        if sha256_file(file) != meta.get("sha256"):
            raise ChecksumError(f"bundle {path}: file {name} does not match its sha256 in manifest.json; "
                              f"it is damaged or from another export; {_redo(path)}")


def read_manifest(path: Path) -> dict:
    """Read and check the header of `path`/manifest.json; raise BundleError if unusable."""
    file = path / MANIFEST
    if not path.is_dir():
        raise ManifestError(f"bundle {path}: no such folder; export one with `edgestill export RECIPE`")
    if not file.is_file():
        raise ManifestError(f"bundle {path}: no {MANIFEST} (not a bundle, or an export that did not "
                          f"finish); {_redo(path)}")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ManifestError(f"bundle {path}: {MANIFEST} is not valid JSON ({err}); {_redo(path)}") from None
    if not isinstance(manifest, dict):
        raise ManifestError(f"bundle {path}: {MANIFEST} is not a JSON object; {_redo(path)}")
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise FormatVersionError(f"bundle {path}: {MANIFEST} has format {manifest.get('format')!r} version "
                          f"{manifest.get('format_version')!r}, this runtime reads {FORMAT!r} version "
                          f"{FORMAT_VERSION}; {_redo(path)} with this version of edgestill")
    for key in ("files", "model", "tokens", "prompt"):
        if not isinstance(manifest.get(key), dict):
            raise ManifestError(f"bundle {path}: {MANIFEST} has no {key!r} section; {_redo(path)}")
    for section, key in REQUIRED:
        if key not in manifest[section]:
            raise ManifestError(f"bundle {path}: {MANIFEST} lacks {section}.{key}; {_redo(path)}")
    return manifest


def read_tokenizer(path: Path) -> Tokenizer:
    """`path`/tokenizer.json as a `tokenizers.Tokenizer`; raise TokenizerError if missing or unreadable."""
    file = path / "tokenizer.json"
    if not file.is_file():
        raise TokenizerError(f"bundle {path}: file tokenizer.json is missing; {_redo(path)}")
    try:
        return Tokenizer.from_file(str(file))
    except Exception as err:  # tokenizers raises a bare Exception for bad JSON
        raise TokenizerError(f"bundle {path}: tokenizer.json cannot be read ({str(err)[:120]}); "
                             f"{_redo(path)}") from None


def read_chat_settings(path: Path) -> tuple[str | None, dict[str, str]]:
    """The chat template (chat_template.jinja first, as transformers 5 saves it, else
    tokenizer_config.json's `chat_template`) and the named special tokens {name: text}."""
    config_file, jinja = path / "tokenizer_config.json", path / "chat_template.jinja"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
        template = jinja.read_text(encoding="utf-8") if jinja.is_file() else config.get("chat_template")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
        raise TokenizerError(f"bundle {path}: tokenizer_config.json or chat_template.jinja cannot be read "
                             f"({err}); {_redo(path)}") from None
    special = {}
    for name in SPECIAL_TOKEN_NAMES:
        value = config.get(name)
        value = value.get("content") if isinstance(value, dict) else value
        if value is not None:
            special[name] = str(value)
    return (template if isinstance(template, str) else None), special


@dataclass
class Bundle:
    """An opened bundle: its folder, manifest and tokenizer."""

    path: Path
    manifest: dict
    tokenizer: Tokenizer
    chat_template: str | None = None
    special_tokens: dict[str, str] = field(default_factory=dict)

    @classmethod
    def open(cls, path: str | os.PathLike, verify: bool = True) -> "Bundle":
        """Open the bundle folder `path`; with `verify`, hash every listed file first."""
        path = Path(path)
        manifest = read_manifest(path)
        if not (path / "tokenizer.json").is_file():  # before the hashes: say "tokenizer", not "a file"
            raise TokenizerError(f"bundle {path}: file tokenizer.json is missing; {_redo(path)}")
        if verify:
            verify_files(path, manifest.get("files", {}))
        tokenizer = read_tokenizer(path)
        template, special = read_chat_settings(path)
        return cls(path=path, manifest=manifest, tokenizer=tokenizer, chat_template=template, special_tokens=special)

    @property
    def model_path(self) -> Path:
        return self.path / self.manifest["model"]["onnx"]

    @property
    def context_length(self) -> int:
        """Most tokens (prompt + generated) the model attends to, from the manifest."""
        return int(self.manifest["model"].get("context_length") or 2048)

    @property
    def eos_token_ids(self) -> list[int]:
        return list(self.manifest["tokens"]["eos_token_ids"])

    @property
    def name(self) -> str:
        return self.manifest.get("name", self.path.name)

    @property
    def labels(self) -> list[str] | None:
        """The task's closed label set (manifest "task": {"labels": [...]}), None for free text."""
        return (self.manifest.get("task") or {}).get("labels")

    @property
    def fields(self) -> list[str] | None:
        """The fields of an extraction task's JSON answer (manifest "task": {"fields": [...]}), None otherwise."""
        return (self.manifest.get("task") or {}).get("fields")

    @property
    def copy_bias(self) -> float:
        """The logit bonus free-text answers give the input's tokens (manifest "task": {"copy_bias"}; 0 when absent)."""
        return float((self.manifest.get("task") or {}).get("copy_bias", 0.0))

    @property
    def verbatim(self) -> bool:
        """Whether a fields task's values are spans copied from the input (manifest "task": {"verbatim": true})."""
        return bool((self.manifest.get("task") or {}).get("verbatim", False))

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
