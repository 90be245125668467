"""Fixtures for the Android demo's CI checks: the app's pure-Java core compiled with javac, a
`probe` that runs calls through it (tests/android/java/Probe.java), and fake bundle folders.

The Java tests need a JDK (javac and java on PATH); without one they skip and say so. Nothing
here needs the Android SDK, which these machines do not have (see android_demo/README.md).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "android_demo"
CORE = DEMO / "app/src/main/java/dev/edgestill/demo/core"
TEST_JAVA = Path(__file__).resolve().parent / "java"


@pytest.fixture(scope="session")
def java_classes(tmp_path_factory) -> Path:
    """The core + test driver compiled for Java 8 (what Android's minSdk 24 allows), once per session."""
    if not (shutil.which("javac") and shutil.which("java")):
        pytest.skip("no JDK on PATH (javac/java): install openjdk-17-jdk-headless to run the Android core tests")
    out = tmp_path_factory.mktemp("android-classes")
    sources = sorted(CORE.glob("*.java")) + sorted(TEST_JAVA.glob("*.java"))
    proc = subprocess.run(["javac", "--release", "8", "-Xlint:all,-options,-unchecked", "-Werror",
                           "-d", str(out), *map(str, sources)], capture_output=True, text=True)
    assert proc.returncode == 0, f"javac failed:\n{proc.stderr}"
    return out


@pytest.fixture(scope="session")
def probe(java_classes):
    """probe([{"op": ..., ...}, ...]) -> [{"ok": value} | {"error": "Class: message"}, ...]."""

    def run(calls: list[dict]) -> list[dict]:
        proc = subprocess.run(["java", "-cp", str(java_classes), "Probe"], input=json.dumps(calls),
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        results = json.loads(proc.stdout)
        assert len(results) == len(calls)
        return results

    return run


def write_bundle(path: Path, **manifest_overrides) -> Path:
    """A bundle folder with small fake files and a manifest.json listing their sizes and sha256."""
    path.mkdir(parents=True, exist_ok=True)
    files = {"model.onnx": b"\x08\x07fake-onnx" * 50, "genai_config.json": b'{"model": {"type": "llama"}}',
             "tokenizer.json": b'{"version": "1.0"}', "tokenizer_config.json": b"{}"}
    for name, data in files.items():
        (path / name).write_bytes(data)
    manifest = {
        "format": "edgestill-bundle", "format_version": 1, "tool_version": "0.1.0", "name": "default-int8",
        "role": "student", "precision": "int8",
        "quantization": {"method": "matmulnbits", "bits": 8, "block_size": 32},
        "params": 56632896,
        "files": {n: {"sha256": hashlib.sha256(d).hexdigest(), "bytes": len(d)} for n, d in files.items()},
        "model": {"onnx": "model.onnx", "num_layers": 8, "num_kv_heads": 3, "head_dim": 64,
                  "kv_dtype": "float32", "context_length": 2048, "vocab_size": 49152},
        "tokens": {"eos_token_ids": [2], "bos_token_id": 1, "pad_token_id": 2},
        "prompt": {"template": "<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n",
                   "instruction": "Summarize {this} paragraph."},
        "quality": {"top1_agreement_vs_fp32": 0.95, "greedy_matching_prefix_mean": 25.0, "note": "text is dropped"},
    }
    manifest.update(manifest_overrides)
    (path / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return path


@pytest.fixture
def bundle_dir(tmp_path) -> Path:
    return write_bundle(tmp_path / "bundle-int8")
