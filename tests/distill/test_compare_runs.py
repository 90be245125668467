"""`python -m edgestill.distill.compare`: paired gains of one distill run over another on the same eval inputs."""

import json
import subprocess
import sys

import pytest

from edgestill.distill.compare import main, paired, read_report
from edgestill.distill.evaluate import eval_fingerprint
from edgestill.errors import UserError

RECORDS = [{"input": f"paragraph {i}", "output": f"summary {i}"} for i in range(4)]


def report(rouge, hits, fingerprint=None):
    tokens = [10, 10, 10, 10]
    return {"data": {"eval_inputs_sha256": fingerprint or eval_fingerprint(RECORDS)},
            "quality": {"n_eval": 4, "rouge_l_vs_teacher": sum(rouge) / 4,
                        "token_agreement_vs_teacher": sum(hits) / sum(tokens)},
            "per_example": {"rouge_l_vs_teacher": rouge, "agreeing_tokens": hits, "answer_tokens": tokens}}


def write(tmp_path, name, data):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_fingerprint_changes_with_inputs_and_answers():
    same = eval_fingerprint([dict(r) for r in RECORDS])
    assert same == eval_fingerprint(RECORDS)
    assert eval_fingerprint(RECORDS[:3]) != same
    assert eval_fingerprint([*RECORDS[:3], {"input": "paragraph 3", "output": "other"}]) != same


def test_paired_gain_and_verdict_printed(tmp_path, capsys):
    a = write(tmp_path, "a", report([0.6, 0.5, 0.7, 0.4], [8, 7, 9, 6]))
    b = write(tmp_path, "b", report([0.5, 0.4, 0.6, 0.3], [6, 5, 7, 4]))
    assert main([a, b]) == 0
    out = capsys.readouterr().out
    assert "rouge_l_vs_teacher: A 0.5500, B 0.4500; A - B +0.1000 (+0.1000 to +0.1000): A is above B" in out
    assert "token_agreement_vs_teacher: A 0.7500, B 0.5500; A - B +0.2000" in out and "A is above B" in out


def test_different_eval_inputs_are_refused(tmp_path):
    a = report([0.6, 0.5, 0.7, 0.4], [8, 7, 9, 6])
    b = report([0.5, 0.4, 0.6, 0.3], [6, 5, 7, 4], fingerprint="0" * 64)
    with pytest.raises(UserError, match="not scored on the same eval inputs"):
        paired(a, b, ("a", "b"))


def test_old_or_foreign_reports_get_a_clear_error(tmp_path):
    old = write(tmp_path, "old", {"quality": {"rouge_l_vs_teacher": 0.4}})
    with pytest.raises(UserError, match="old.json: no per_example scores"):
        read_report(old)
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff\xfe not json")
    with pytest.raises(UserError, match="bad.json: not a readable"):
        read_report(bad)


def test_cli_exits_2_with_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "edgestill.distill.compare", str(tmp_path / "missing.json")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("usage: edgestill compare") and "Traceback" not in done.stderr
