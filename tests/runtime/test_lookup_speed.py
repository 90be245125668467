"""benchmarks/lookup_speed.py on the tiny bundle: plain and drafted decoding of the inputs, files written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgestill.benchmarks.record import problems, read_records
from edgestill.errors import UserError
from tests.export.tiny_bundles import TEXTS

ROOT = Path(__file__).resolve().parents[2]


def run(*args):
    return subprocess.run([sys.executable, "-m", "edgestill.benchmarks.lookup_speed", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT)


def test_lookup_speed_compares_settings_on_the_eval_inputs(fp32_bundle, tmp_path):
    data = tmp_path / "inputs.jsonl"
    records = [{"split": "eval", "input": " ".join(TEXTS) * 2, "output": TEXTS[0]},
               {"split": "eval", "input": TEXTS[0] * 3, "output": TEXTS[1]}, {"split": "train", "input": "not used"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    done = run(fp32_bundle, "--data", data, "--lookup", "2", "4", "--rounds", "2", "--threads", "1",
               "--max-new-tokens", "24", "--out", tmp_path / "out")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "out" / "lookup_speed.json").read_text())
    rows = {row["lookup"]: row for row in result["rows"]}
    assert set(rows) == {0, 2, 4} and result["meta"]["inputs"] == 2
    assert len(result["rounds"]) == 6 and {r["round"] for r in result["rounds"]} == {0, 1}
    assert 0 <= rows[0]["rouge_l_vs_teacher"] <= 1
    assert rows[0]["speedup"] == 1.0 and rows[0]["runs_per_token"] == 1.0 and rows[0]["drafted"] == 0
    for k in (2, 4):  # fp32: drafts change no token; repeated text: drafts accepted, fewer runs
        assert rows[k]["answers_same_as_plain"] == "2/2" and rows[k]["rouge_l_vs_teacher"] == rows[0]["rouge_l_vs_teacher"]
        assert 0 < rows[k]["accepted"] <= rows[k]["drafted"] and rows[k]["runs_per_token"] < 1.0
    assert "| off |" in (tmp_path / "out" / "lookup_speed.md").read_text()
    records = {r["prompt_lookup"]: r for r in read_records(tmp_path / "out" / "records.jsonl")}
    assert set(records) == {0, 2, 4} and all(problems(r) == [] for r in records.values())
    assert records[0]["engine"] == "edgestill-runtime" and records[4]["engine"] == "edgestill-runtime prompt_lookup=4"
    assert records[2]["quality"]["same_as_plain"] == 1.0 and records[2]["decode_ms_p50"] == rows[2]["ms_per_token"]


def test_lookup_speed_reads_teacher_jsonl_answered_records_of_the_split(tmp_path):
    from edgestill.benchmarks.lookup_speed import read_inputs

    data = tmp_path / "teacher.jsonl"
    records = [{"id": 0, "split": "eval", "input": "a", "output": "A", "ended": True},
               {"id": 1, "split": "eval", "input": "b", "output": ""},  # not answered yet: left out
               {"id": 2, "split": "train", "input": "c", "output": "C"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"id": 3, "spl')  # + a torn last line
    assert read_inputs(data, "eval") == [("a", "A")]
    assert read_inputs(data, "all") == [("a", "A"), ("c", "C")]
    with pytest.raises(UserError, match="--split"):
        read_inputs(data, "test")


def test_lookup_speed_bad_data_is_a_one_line_error(fp32_bundle, tmp_path):
    data = tmp_path / "inputs.jsonl"
    data.write_text('{"split": "train", "input": "x"}\n')
    done = run(fp32_bundle, "--data", data)
    assert done.returncode == 2 and 'no records with "split": "eval"' in done.stderr
    data.write_text("not json\n")
    done = run(fp32_bundle, "--data", data)
    assert done.returncode == 2 and "line 1: not a JSON object" in done.stderr
    done = run(tmp_path, "--data", data)
    assert done.returncode == 2 and "not a bundle" in done.stderr
