"""The record schema: the example file and every record the tools write validate; broken records do not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgestill.benchmarks.record import (
    SCHEMA_PATH,
    error_record,
    problems,
    read_records,
    schema,
)
from edgestill.errors import UserError

EXAMPLE = Path(__file__).resolve().parents[2] / "benchmarks" / "record_example.json"


@pytest.fixture(scope="module")
def examples():
    return json.loads(EXAMPLE.read_text())


def test_schema_is_valid_json_schema():
    from jsonschema import Draft202012Validator

    Draft202012Validator.check_schema(schema())
    assert json.loads(SCHEMA_PATH.read_text())["properties"]["schema"]["const"] == "edgestill-bench-record"


def test_example_records_validate_and_cover_each_kind(examples):
    assert all(problems(r) == [] for r in examples)
    assert {r.get("status", "ok") for r in examples} == {"ok", "error"}
    phone = next(r for r in examples if r["target"].startswith("adb://"))
    assert phone["machine"]["device_model"] and phone["machine"]["android_version"]
    assert any("status" not in r for r in examples)  # a version-1 record written before `status` still validates


@pytest.mark.parametrize("change, field", [
    ({"status": "error", "error": None}, "error"),
    ({"target": "ftp://x"}, "target"),
    ({"threads": 0}, "threads"),
    ({"schema": "other"}, "schema"),
    ({"decode_tok_s_p50": "fast"}, "decode_tok_s_p50"),
])
def test_broken_records_fail(examples, change, field):
    found = problems(examples[1] | change)
    assert found and any(field in p for p in found)


def test_ok_record_needs_its_timings(examples):
    rec = {k: v for k, v in examples[1].items() if k != "ttft_ms_p50"}
    assert any("ttft_ms_p50" in p for p in problems(rec))


def test_error_record_validates():
    rec = error_record({"name": "m", "bundle": "b", "engine": "edgestill-runtime"},
                       {"target": "ssh://pi@board:22", "threads": 2, "prompt_tokens": 8, "gen_tokens": 2,
                        "warmup": 1, "repetitions": 1}, "ssh://pi@board:22: cannot log in\n(timeout)")
    assert problems(rec) == [] and rec["error"] == "ssh://pi@board:22: cannot log in (timeout)"


def test_read_records_accepts_jsonl_list_and_object(tmp_path, examples):
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in examples))
    (tmp_path / "b.json").write_text(json.dumps(examples))
    (tmp_path / "c.json").write_text(json.dumps(examples[0]))
    assert read_records(tmp_path / "a.jsonl") == read_records(tmp_path / "b.json") == examples
    assert read_records(tmp_path / "c.json") == examples[:1]
    (tmp_path / "d.json").write_text('{"x": 1}')
    with pytest.raises(UserError, match="not benchmark records"):
        read_records(tmp_path / "d.json")


def test_side_tool_records_validate_and_bad_ones_are_not_written(tmp_path):
    from edgestill.benchmarks.record import tool_record, write_records
    from edgestill.machine import machine_info

    settings = {"engine": "edgestill-runtime prompt_lookup=4", "threads": 2, "prompt_tokens": 40, "gen_tokens": 64,
                "repetitions": 3, "rounds": 3}
    rec = tool_record("lookup_speed", "tiny-fp32", "build/x/bundle-fp32", settings, machine_info(), prompt_lookup=4,
                      decode_ms_p50=2.5, decode_ms_ratio_vs={"edgestill-runtime": 0.8}, figures={"drafted": 12})
    assert problems(rec) == [] and rec["load_s"] is None and rec["tool"] == "lookup_speed"
    assert read_records(write_records(tmp_path / "records.jsonl", [rec])) == [rec]
    with pytest.raises(ValueError, match="tiny-fp32: threads"):
        write_records(tmp_path / "bad.jsonl", [{**rec, "threads": 0}])
    assert not (tmp_path / "bad.jsonl").exists()


def test_emulated_arm64_target_validates_and_unknown_schemes_do_not(examples):
    ok = next(r for r in examples if r.get("status", "ok") == "ok")
    assert problems({**ok, "target": "qemu://cortex-a76"}) == []
    assert problems({**ok, "target": "qemu://"}) and problems({**ok, "target": "docker://x"})
