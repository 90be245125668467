"""Grids, peers and printers on real tiny bundles: one record per (model, engine, point), CSV, compare."""

from __future__ import annotations

import csv
import io
import json

import pytest

from edgestill.benchmarks.__main__ import main
from edgestill.benchmarks.compare import compare_records
from edgestill.benchmarks.csv_printer import render_csv
from edgestill.benchmarks.measure import measure_in_subprocess
from edgestill.benchmarks.peers import llama_bench_record
from edgestill.benchmarks.record import problems
from tests.benchmarks.conftest import write_recipe


@pytest.fixture(scope="module")
def grid_run(tiny_build, tmp_path_factory):
    import shutil

    root = tmp_path_factory.mktemp("grid")
    shutil.copytree(tiny_build, root / "tiny")
    recipe = write_recipe(root, quality_examples=1, repetitions=2, warmup=0, prompt_tokens=[8, 16], gen_tokens=3,
                          engines=["edgestill-runtime", "onnxruntime-genai", "llama.cpp"])
    code = main([str(recipe), "--build-root", str(root), "--bundles", str(root / "tiny" / "bundle-int8"),
                 str(root / "tiny" / "teacher-bundle-fp32")])
    return code, root / "tiny" / "report"


def test_grid_gives_a_record_per_model_engine_and_point(grid_run):
    code, out = grid_run
    assert code == 0
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    keys = sorted((r["name"], r["engine"], r["prompt_tokens"]) for r in records)
    assert keys == sorted((n, e, p) for n in ("tiny-int8", "teacher-fp32")
                          for e in ("edgestill-runtime", "onnxruntime-genai") for p in (8, 16))
    assert all(problems(r) == [] for r in records)
    assert len({r["run_id"] for r in records}) == 1
    for r in records:
        assert r["status"] == "ok" and r["decode_tok_s_min"] <= r["decode_tok_s_p50"] <= r["decode_tok_s_max"]
        assert r["pinned_cpus"] is None or len(r["pinned_cpus"]) == 1
        assert isinstance(r["noisy"], bool) and r["timing_scope"]
        assert "rouge_l_vs_teacher" in r["quality"]  # quality of the bundle, on every engine's row


def test_report_headline_ratios_notes_and_grid_table(grid_run):
    _, out = grid_run
    report = json.loads((out / "report.json").read_text())
    assert [m["label"] for m in report["models"]] == ["teacher-fp32", "tiny-int8"]
    assert [m["label"] for m in report["peers"]] == ["teacher-fp32 (onnxruntime-genai)",
                                                     "tiny-int8 (onnxruntime-genai)"]
    assert all(m["prompt_tokens"] == 8 for m in report["rows"][:1]) and len(report["rows"]) == 8
    assert report["ratios"]["tiny-int8"]["teacher"] == "teacher-fp32"
    assert report["ratios"]["tiny-int8 (onnxruntime-genai)"]["teacher"] == "teacher-fp32"
    assert any("llama" in n for n in report["notes"])  # installed or not, the report says what happened
    md = (out / "report.md").read_text()
    assert "## Every measurement" in md and "## Notes" in md


def test_csv_has_a_row_per_record(grid_run):
    _, out = grid_run
    rows = list(csv.DictReader(io.StringIO((out / "records.csv").read_text())))
    assert len(rows) == 8 and rows[0]["schema"] == "edgestill-bench-record"
    assert {"machine.cpu", "quality.rouge_l_vs_teacher", "decode_tok_s_p50"} <= set(rows[0])


def test_compare_shows_ratio_per_matching_row(grid_run):
    _, out = grid_run
    a = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    b = json.loads(json.dumps(a))
    b[0]["decode_tok_s_p50"] = a[0]["decode_tok_s_p50"] * 2
    md = compare_records(a, b[:-1])
    first = next(line for line in md.splitlines() if "| decode_tok_s_p50 |" in line)
    assert first.endswith("| 2.00x |")
    assert sum("| – |" in line for line in md.splitlines()) >= 1  # the row missing from B


def test_transformers_eager_peer_on_an_hf_folder(tiny_llama_dir):
    rec = measure_in_subprocess(tiny_llama_dir, threads=1, prompt_tokens=8, gen_tokens=3, repetitions=1,
                                engine="transformers-eager", warmup=0, name="tiny-teacher", role="teacher")
    assert rec["engine"] == "transformers-eager" and rec["status"] == "ok" and rec["params"] > 0
    assert rec["file_bytes"] > 0 and rec["decode_tok_s_p50"] > 0 and problems(rec) == []


def test_llama_bench_json_rows_become_a_record(tmp_path):
    gguf = tmp_path / "student-q8_0.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 60)
    rows = [{"model_type": "llama 56M Q8_0", "model_n_params": 56632896, "build_commit": "abc123", "n_prompt": 64,
             "n_gen": 0, "avg_ts": 640.0, "samples_ts": [630.0, 650.0]},
            {"model_type": "llama 56M Q8_0", "model_n_params": 56632896, "build_commit": "abc123", "n_prompt": 0,
             "n_gen": 32, "avg_ts": 100.0, "samples_ts": [90.0, 100.0, 110.0]}]
    rec = llama_bench_record(rows, gguf)
    assert rec["precision"] == "q8_0" and rec["ttft_ms_p50"] == 100.0 and rec["decode_tok_s_p50"] == 100.0
    assert (rec["decode_tok_s_min"], rec["decode_tok_s_max"]) == (90.0, 110.0) and rec["file_bytes"] == 64
    assert render_csv([{"schema": "edgestill-bench-record", **rec}]).count("\n") == 2
