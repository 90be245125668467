"""The benchmark's llama.cpp engine (llama-cpp-python): the student's exported GGUF and the teacher's
GGUF measured beside our runtime in one run, with the like-for-like speed line in the report."""

from __future__ import annotations

import json

import pytest

from edgestill.benchmarks.__main__ import main
from edgestill.benchmarks.record import problems
from edgestill.export.bundle import ExportSettings
from edgestill.export.gguf_bundle import export_gguf
from edgestill.export.gguf_file import write_gguf
from edgestill.export.validate import Reference
from tests.benchmarks.conftest import write_recipe
from tests.export.tiny_bundles import INSTRUCTION, TEXTS

pytest.importorskip("llama_cpp", reason="llama-cpp-python is built by `make test` (cmake + g++)")


def test_llama_cpp_rows_for_student_and_teacher_beside_our_runtime(build_copy, tiny_llama_dir, tmp_path):
    export_gguf(tiny_llama_dir, build_copy / "gguf-q8_0", "gguf-q8_0",
                ExportSettings(INSTRUCTION, tuple(TEXTS), name="tiny-gguf-q8_0"), Reference(tiny_llama_dir))
    teacher_gguf = tmp_path / "teacher.Q8_0.gguf"
    write_gguf(tiny_llama_dir, teacher_gguf, "q8_0", name="teacher")  # stands in for the teacher's own file
    (build_copy / "student").mkdir()
    (build_copy / "student" / "distill_report.json").write_text(json.dumps({"teacher": {"gguf": str(teacher_gguf)}}))
    recipe = write_recipe(tmp_path, quality_examples=2, repetitions=2, warmup=0,
                          engines=["edgestill-runtime", "llama.cpp"])
    assert main([str(recipe), "--build-root", str(build_copy.parent), "--bundles", str(build_copy / "bundle-int8")]) == 0
    records = [json.loads(line) for line in (build_copy / "report" / "records.jsonl").read_text().splitlines()]
    by_name = {(r["name"], r["engine"]): r for r in records}
    student = by_name[("tiny-gguf-q8_0", "llama.cpp")]
    teacher = by_name[("teacher-teacher.Q8_0", "llama.cpp")]
    assert student["status"] == teacher["status"] == "ok" and teacher["role"] == "teacher"
    assert student["precision"] == "gguf-q8_0" and student["decode_tok_s_p50"] > 0 and student["peak_rss_mb"] > 0
    assert by_name[("tiny-int8", "edgestill-runtime")]["status"] == "ok"
    assert not problems(student) and not problems(teacher)  # record.schema.json
    report = json.loads((build_copy / "report" / "report.json").read_text())
    line = next(n for n in report["notes"] if n.startswith("llama.cpp gguf-q8_0 vs our runtime int8"))
    assert "decodes" in line and "x faster" in line
    got = student["quality"]  # its answers to the eval inputs in llama.cpp, scored as the bundles' are
    assert 0 <= got["rouge_l_vs_teacher"] <= 1 and "top1_agreement_vs_fp32" in got
    assert f"ROUGE-L vs the references: llama.cpp {got['rouge_l_vs_label']:.3f}" in line
