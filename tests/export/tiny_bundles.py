"""Tiny-model bundles shared by tests/export and tests/runtime, built once per session.

The fp32_bundle/int8_bundle fixtures (tests/conftest.py) call `tiny_bundle`; the folder is fixed under pytest's base temp dir, so the
second caller finds a finished bundle and `export_bundle` skips it.
"""

from __future__ import annotations

from pathlib import Path

INSTRUCTION = "Summarize the following paragraph in one sentence."
TEXTS = [
    "The city council voted on Tuesday to expand the bike lane network by 40 kilometres.",
    "Café owners in Zürich say the new rules are “confusing” — and costly.",
]
# Held-out "teacher text": (input, teacher answer, whether the teacher stopped with eos).
PAIRS = [
    (TEXTS[0], "The council approved 40 km of new bike lanes.", True),
    (TEXTS[1], "Zürich café owners find the new rules confusing and expensive.", False),
]


def tiny_bundle(tmp_path_factory, model_dir: Path, precision: str) -> Path:
    """Folder of the tiny model's bundle at `precision` (exported on first use)."""
    from edgestill.export import ExportSettings, export_bundle

    out = tmp_path_factory.getbasetemp() / "tiny-bundles" / f"bundle-{precision}"
    export_bundle(model_dir, out, precision, ExportSettings(INSTRUCTION, tuple(TEXTS), name=f"tiny-{precision}",
                                                            quality_pairs=tuple(PAIRS)))
    return out
