"""The sweep chart on hand-made point reports: Pareto fronts, the smallest student that keeps 0.95 of
the teacher, the files written, and a missing report named in one line."""

from __future__ import annotations

import json

import pytest

from edgestill.benchmarks.sweep_chart import main
from edgestill.errors import UserError


def report(tmp_path, name, mb, ms, score, retention, teacher=0.80, novel=None):
    words = {} if novel is None else {"novel_word_share": {"value": novel[1], "ci95": None}}
    rows = [{"name": "teacher-fp32", "role": "teacher", "precision": "fp32", "params": 134_000_000,
             "file_bytes": 540_000_000, "request_ms": 500.0, "secondary": {} if novel is None else
             {"novel_word_share": {"value": novel[0], "ci95": None}},
             "score": None if teacher is None else {"value": teacher, "ci95": [0.7, 0.9]}},
            {"name": f"{name}-fp32", "role": "student", "precision": "fp32", "params": 10_000_000,
             "file_bytes": int(mb * 4e6), "request_ms": ms * 2, "score": {"value": score, "ci95": None}},
            {"name": f"{name}-int8", "role": "student", "precision": "int8", "params": 10_000_000,
             "file_bytes": int(mb * 1e6), "request_ms": ms, "score": {"value": score, "ci95": [score - 0.1, score + 0.1]},
             "secondary": words,
             "retention": None if retention is None else {"value": retention, "ci95": [retention - 0.1, retention + 0.1]}}]
    path = tmp_path / name / "report.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"headline": {"name": "accuracy", "rows": rows}}))
    return f"{name}={path}"


def test_fronts_and_the_smallest_student_that_keeps_the_teacher(tmp_path):
    points = [report(tmp_path, "small", 10, 20, 0.60, 0.75), report(tmp_path, "mid", 20, 40, 0.78, 0.975),
              report(tmp_path, "slow", 30, 60, 0.70, 0.875), report(tmp_path, "big", 40, 80, 0.80, 1.0)]
    out = tmp_path / "sweep"
    assert main(["--out", str(out), *points]) == 0
    s = json.loads((out / "sweep.json").read_text())
    assert [p["bundle"] for p in s["points"]] == ["small-int8", "mid-int8", "slow-int8", "big-int8"]
    assert s["front_latency"] == s["front_size"] == ["small", "mid", "big"]  # slow is beaten by mid
    assert s["smallest_keeping"] == "mid" and s["teacher"]["score"] == 0.80
    md = (out / "sweep.md").read_text()
    assert "| mid | mid-int8 | 10.0M | 20.0 | 40.0 | 0.780 (0.680-0.880) | 0.975 | front ★ |" in md
    assert (out / "sweep.png").read_bytes().startswith(b"\x89PNG")


def test_no_student_keeping_is_said(tmp_path):
    out = tmp_path / "sweep"
    assert main(["--out", str(out), report(tmp_path, "small", 10, 20, 0.60, 0.75)]) == 0
    assert "No student keeps 0.95" in (out / "sweep.md").read_text()
    assert json.loads((out / "sweep.json").read_text())["smallest_keeping"] is None


def test_free_text_points_show_their_new_words_beside_the_teachers(tmp_path):
    out = tmp_path / "sweep"
    points = [report(tmp_path, "small", 10, 20, 0.30, 0.6, novel=(0.17, 0.42)),
              report(tmp_path, "big", 40, 80, 0.42, 0.87, novel=(0.17, 0.168))]
    assert main(["--out", str(out), *points]) == 0
    md = (out / "sweep.md").read_text()
    assert "| retention | new words | Pareto (latency) |" in md
    assert "| small | small-int8 | 10.0M | 10.0 | 20.0 | 0.300 (0.200-0.400) | 0.600 | 0.420 | front |" in md
    assert "MB, new words 0.170." in md
    assert [p["novel_word_share"] for p in json.loads((out / "sweep.json").read_text())["points"]] == [0.42, 0.168]


def test_scores_against_the_teacher_itself(tmp_path):
    """No ground truth: the teacher is the reference (no score of its own) and there is no retention."""
    out = tmp_path / "sweep"
    assert main(["--out", str(out), report(tmp_path, "small", 10, 20, 0.40, None, teacher=None)]) == 0
    md = (out / "sweep.md").read_text()
    assert "Teacher (teacher-fp32): the reference of the scores, 500.0 ms per request" in md
    assert "No retention: the scores are against the teacher itself" in md
    assert (out / "sweep.png").is_file()
    assert json.loads((out / "sweep.json").read_text())["smallest_keeping"] is None


def test_a_missing_report_is_one_line(tmp_path):
    with pytest.raises(UserError, match="l4: .*report.json not found; run the sweep"):
        main(["--out", str(tmp_path / "sweep"), f"l4={tmp_path / 'nope' / 'report.json'}"])
