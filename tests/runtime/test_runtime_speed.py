"""benchmarks/runtime_speed.py on the tiny bundle: every engine runs in its own process, files are written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from edgestill.benchmarks.record import problems, read_records

ROOT = Path(__file__).resolve().parents[2]


def test_runtime_speed_writes_json_and_markdown(fp32_bundle, tmp_path):
    done = subprocess.run([sys.executable, "-m", "edgestill.benchmarks.runtime_speed", str(fp32_bundle), "--repetitions", "1",
                           "--rounds", "2", "--prompt-tokens", "16", "--gen-tokens", "4", "--threads", "1",
                           "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "runtime_speed.json").read_text())
    rows = {row["engine"]: row for row in result["rows"]}
    assert set(rows) == {"edgestill", "onnxruntime-genai", "plain-ort"}
    for row in rows.values():
        assert row["decode_ms_p50"] > 0 and row["ttft_ms_p50"] > 0 and row["peak_rss_mb"] > row["rss_after_imports_mb"]
    assert rows["edgestill"]["edgestill_speedup"] == 1.0
    assert all(len(run["decode_ms"]) == 3 for run in result["runs"])  # 4 tokens: 3 decode steps after the first
    assert len(result["rounds"]) == 6 and {r["round"] for r in result["rounds"]} == {0, 1}  # 3 engines x 2 rounds
    assert all(row["rounds"] == 2 and row["runs"] == 1 for row in rows.values())
    table = (tmp_path / "runtime_speed.md").read_text()
    assert "| onnxruntime-genai |" in table and "plain-ort stands in" in table
    records = {r["engine"]: r for r in read_records(tmp_path / "records.jsonl")}  # validated when written
    assert set(records) == {"edgestill-runtime", "onnxruntime-genai", "plain-ort"}
    ours = records["edgestill-runtime"]
    assert ours["tool"] == "runtime_speed" and ours["decode_ms_p50"] == rows["edgestill"]["decode_ms_p50"]
    assert ours["decode_ms_ratio_vs"] == {"edgestill-runtime": 1.0} and ours["machine"]["cores_logical"] >= 1
    assert all(problems(r) == [] for r in records.values())


def test_runtime_speed_refuses_a_folder_that_is_not_a_bundle(tmp_path):
    done = subprocess.run([sys.executable, "-m", "edgestill.benchmarks.runtime_speed", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and "not a bundle" in done.stderr
