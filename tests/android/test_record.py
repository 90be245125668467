"""The benchmark JSON the app writes matches the harness's schema (benchmarks/record.schema.json).

The app's benchmark mode is pure Java down to the engine (core/BenchRun.java); here it runs with
a deterministic fake engine and fake clock (tests/android/java/FakeEngine.java) through
Probe.java, and every record it writes (ok and error) is validated against the schema, and
its figures checked against what the fake clock makes them.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from .conftest import write_bundle

REPO = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((REPO / "benchmarks/record.schema.json").read_text())


def bench(probe, dir: Path, **args) -> list[dict]:
    """Run one benchmark-mode launch; return the parsed bench_out list, each record schema-valid."""
    call = {"op": "bench", "bundle": args.pop("bundle", dir.name), "dir": str(dir), **args}
    [r] = probe([call])
    assert "error" not in r, r["error"]
    records = json.loads(r["ok"])
    assert isinstance(records, list) and records
    validator = jsonschema.Draft202012Validator(SCHEMA)
    for record in records:
        errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(record)]
        assert not errors, errors
        assert set(record) <= set(SCHEMA["properties"]), set(record) - set(SCHEMA["properties"])
        assert set(record.get("machine", {})) <= set(SCHEMA["properties"]["machine"]["properties"])
    return records


def test_the_schema_itself_is_valid():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_a_measurement_gives_the_harness_figures(probe, bundle_dir):
    extras = {"prompt_tokens": 64, "gen_tokens": 32, "repetitions": 3, "target": "adb://R5CT1234567",
              "run_id": "20261122T054000Z-1a2b3c"}
    [r] = bench(probe, bundle_dir, extras=extras, bundle="bundle-int8")
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert r["status"] == "ok" and r["error"] is None
    assert (r["name"], r["bundle"], r["role"], r["precision"]) == ("default-int8", "bundle-int8", "student", "int8")
    assert r["quantization"] == manifest["quantization"] and r["params"] == manifest["params"]
    assert r["file_bytes"] == sum(f["bytes"] for f in manifest["files"].values())
    assert (r["engine"], r["target"], r["threads"], r["prompt_tokens"], r["gen_tokens"]) == \
        ("android-demo", "adb://R5CT1234567", 2, 64, 32)
    assert (r["warmup"], r["repetitions"], r["run_id"]) == (1, 3, "20261122T054000Z-1a2b3c")
    # the fake model: load 250 ms; prefill 0.5 ms/token + 1 ms; 4 ms per decode step
    assert r["load_s"] == 0.25
    assert r["ttft_ms_p50"] == r["ttft_ms_p90"] == 33.0
    assert r["decode_ms_p50"] == r["decode_ms_p90"] == 4.0
    assert r["decode_tok_s_p50"] == r["decode_tok_s_min"] == r["decode_tok_s_max"] == 250.0
    assert r["prefill_tok_s_p50"] == round(64 / 0.033, 1)
    assert r["peak_rss_mb"] == round(412345 / 1024, 1)
    assert r["quality"] == {"top1_agreement_vs_fp32": 0.95, "greedy_matching_prefix_mean": 25.0}
    assert r["noisy"] is False and r["noise"] == []
    assert r["machine"]["device_model"] == "Fake Phone" and r["machine"]["android_version"] == "14 (API 34)"


def test_a_threads_list_gives_one_record_each_and_notes_the_shared_process(probe, bundle_dir):
    records = bench(probe, bundle_dir, extras={"threads": "1,4", "repetitions": 1, "gen_tokens": 2})
    assert [r["threads"] for r in records] == [1, 4]
    assert records[0]["noise"] == []
    assert records[1]["noisy"] is True and "same process" in records[1]["noise"][0]


def test_threads_that_did_not_reach_the_engine_are_reported(probe, bundle_dir):
    [r] = bench(probe, bundle_dir, threads_applied=False, extras={"repetitions": 1})
    assert r["status"] == "ok" and r["noisy"] is True
    assert "threads=2 not applied" in r["noise"][0]


def test_one_generated_token_has_no_decode_figures(probe, bundle_dir):
    [r] = bench(probe, bundle_dir, extras={"gen_tokens": 1, "repetitions": 2})
    assert r["status"] == "ok" and r["ttft_ms_p50"] == 33.0
    assert r["decode_ms_p50"] is None and r["decode_tok_s_p50"] is None


def error_record(probe, dir: Path, **args) -> dict:
    [r] = bench(probe, dir, **args)
    assert r["status"] == "error", r
    assert r["error"] and "\n" not in r["error"]
    assert r["load_s"] is None and r["ttft_ms_p50"] is None
    return r


def test_missing_bundle_gives_an_error_record(probe, tmp_path):
    r = error_record(probe, tmp_path / "bundle-int4", bundle="bundle-int4")
    assert "no such folder" in r["error"] and r["name"] == "bundle-int4" and r["bundle"] == "bundle-int4"


def test_a_bundle_under_data_local_tmp_gets_a_hint(probe):
    r = error_record(probe, Path("/data/local/tmp/edgestill/bundle-int8"), bundle="/data/local/tmp/edgestill/bundle-int8")
    assert "apps cannot read /data/local/tmp" in r["error"] and "/sdcard/Android/data/dev.edgestill.demo" in r["error"]


def test_incompatible_format_version_gives_an_error_record(probe, tmp_path):
    d = write_bundle(tmp_path / "new-bundle", format_version=2)
    r = error_record(probe, d)
    assert "version 2, this app reads 'edgestill-bundle' version 1" in r["error"]
    assert r["name"] == "default-int8" and len(r["bundle_sha256"]) == 64


def test_not_enough_memory_gives_an_error_record_before_loading(probe, bundle_dir):
    r = error_record(probe, bundle_dir, available_bytes=50 << 20, fail_load="the loader must not be called")
    assert r["error"].startswith("not enough memory: the bundle needs about")


def test_out_of_memory_while_loading_gives_an_error_record(probe, bundle_dir):
    r = error_record(probe, bundle_dir, oom=True)
    assert "not enough memory" in r["error"] and "Failed to allocate 812 MB" in r["error"]


def test_an_engine_failure_is_one_escaped_line(probe, bundle_dir):
    r = error_record(probe, bundle_dir, fail_load='Load model "x" failed:\n\tunknown op "GatherBlockQuantized"')
    assert 'unknown op "GatherBlockQuantized"' in r["error"] and "IllegalStateException" in r["error"]


def test_an_engine_that_stops_early_gives_an_error_record(probe, bundle_dir):
    r = error_record(probe, bundle_dir, stop_after=5, extras={"gen_tokens": 8})
    assert "stopped after 5 tokens, expected 8" in r["error"]


def test_a_prompt_beyond_the_context_window_gives_an_error_record(probe, bundle_dir):
    r = error_record(probe, bundle_dir, extras={"prompt_tokens": 2040, "gen_tokens": 32})
    assert "exceeds the model's context_length 2048" in r["error"]


@pytest.mark.parametrize("extras", [{"threads": "0"}, {"target": "local"}])
def test_bad_extras_give_one_error_record(probe, bundle_dir, extras):
    [r] = bench(probe, bundle_dir, extras=extras)
    assert r["status"] == "error" and r["error"].startswith("extra ")
