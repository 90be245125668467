"""benchmarks/optimum_peer.py: Optimum's ORTModelForCausalLM on our bundle and on its own export.

The run needs `.venv-optimum` (`make optimum-venv`; `make test` makes it); without it the
end-to-end test skips. Speed figures are not asserted (see the README's measured tables).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OPTIMUM_PY = ROOT / ".venv-optimum" / "bin" / "python"


@pytest.mark.slow
@pytest.mark.skipif(not OPTIMUM_PY.exists(), reason=".venv-optimum is missing (make optimum-venv)")
def test_optimum_runs_our_bundle_with_our_greedy_ids(tmp_path, tiny_llama_dir, fp32_bundle):
    out = tmp_path / "peer"
    done = subprocess.run([str(OPTIMUM_PY), "-m", "edgestill.benchmarks.optimum_peer", str(tiny_llama_dir), str(fp32_bundle),
                           "--threads", "1", "--rounds", "2", "--prompt-tokens", "16", "--gen-tokens", "8",
                           "--no-memory", "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "optimum_peer.json").read_text())
    engines = {r["engine"]: r for r in report["rows"]}
    assert set(engines) == {"edgestill fp32", "optimum on our fp32", "optimum export fp32", "optimum export int8"}
    assert report["same_ids"]["optimum on our fp32"] is True  # Optimum's loop on our graph = our greedy ids
    assert (out / "optimum-export-int8" / "model_quantized.onnx").is_file()
    for row in engines.values():
        assert row["decode_ms_p50"] > 0 and row["speedup_of_edgestill fp32"] > 0
    assert "| optimum on our fp32 |" in (out / "optimum_peer.md").read_text()
    assert len([r for r in report["rounds"] if r["engine"] == "edgestill fp32"]) == 2


def test_without_optimum_it_says_which_python_to_use(tmp_path, fp32_bundle):
    pytest.importorskip("onnxruntime")
    try:
        import optimum.onnxruntime  # noqa: F401
        pytest.skip("this venv has Optimum")
    except ImportError:
        pass
    done = subprocess.run([sys.executable, "-m", "edgestill.benchmarks.optimum_peer", str(tmp_path), str(fp32_bundle)],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2
    assert ".venv-optimum/bin/python" in done.stderr and "Traceback" not in done.stderr
