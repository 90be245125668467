"""The report printers on hand-made records: JSON shape, Markdown rows, ratios, PNG plots, compare."""

from __future__ import annotations

import json

import pytest

from edgestill.benchmarks.compare import compare
from edgestill.benchmarks.markdown import render
from edgestill.benchmarks.report import build_report, merge_examples, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MACHINE = {"cpu": "Test CPU", "arch": "x86_64", "cores_logical": 2, "ram_gb": 8.0, "os": "Linux",
           "python": "3.11", "onnxruntime": "1.31.1", "tool_version": "0.1.0", "git_commit": None}


def record(name, role, precision, params, file_bytes, tok_s, rouge):
    return {"name": name, "role": role, "precision": precision, "params": params, "file_bytes": file_bytes,
            "peak_rss_mb": file_bytes / 1e6 + 50, "load_s": 0.5, "ttft_ms_p50": 1000.0 / tok_s * 4,
            "ttft_ms_p90": 1200.0 / tok_s * 4, "decode_ms_p50": 1000.0 / tok_s, "decode_ms_p90": 1100.0 / tok_s,
            "decode_tok_s_p50": tok_s, "bundle": f"build/x/{name}", "bundle_sha256": "0" * 64,
            "quantization": None, "threads": 2, "quality": {"rouge_l_vs_teacher": rouge}, "machine": MACHINE}


@pytest.fixture
def records():
    return [record("bundle-int8", "student", "int8", 50_000_000, 60_000_000, 80.0, 0.6),
            record("teacher-bundle-fp32", "teacher", "fp32", 135_000_000, 540_000_000, 20.0, 1.0),
            record("bundle-fp32", "student", "fp32", 50_000_000, 200_000_000, 40.0, 0.62)]


@pytest.fixture
def report(records):
    rows = {"teacher-bundle-fp32": [{"id": 7, "input": "in | put", "teacher": "ref", "label": None,
                                     "output": "ref"}],
            "bundle-int8": [{"id": 7, "input": "in | put", "teacher": "ref", "label": None, "output": "mine"}]}
    return build_report(MACHINE, {"recipe": "x", "threads": 2}, records, merge_examples(rows))


def test_models_sorted_teacher_first_then_precision(report):
    assert [m["name"] for m in report["models"]] == ["teacher-bundle-fp32", "bundle-fp32", "bundle-int8"]
    assert "machine" not in report["models"][0] and "threads" not in report["models"][0]


def test_ratios_against_teacher(report):
    r = report["ratios"]["bundle-int8"]
    assert r["teacher"] == "teacher-bundle-fp32"
    assert r["size_x_smaller"] == 9.0
    assert r["params_x_fewer"] == 2.7
    assert r["decode_x_faster"] == 4.0
    assert set(report["ratios"]) == {"bundle-int8", "bundle-fp32"}


def test_no_teacher_no_ratios(records):
    assert build_report(MACHINE, {}, records[:1])["ratios"] == {}


def test_examples_merged_side_by_side(report):
    (ex,) = report["examples"]
    assert ex["id"] == 7 and ex["outputs"] == {"teacher-bundle-fp32": "ref", "bundle-int8": "mine"}


def test_markdown_has_a_row_per_model_and_escapes_pipes(report):
    md = render(report)
    main_table = md.split("\n## ")[0]
    for m in report["models"]:
        assert sum(line.startswith(f"| {m['name']} |") for line in main_table.splitlines()) == 1
    assert "Test CPU" in md and "9.00x smaller" in md
    assert "in \\| put" in md


def test_write_report_files(tmp_path, report, records):
    paths = write_report(tmp_path / "report", report, records)
    names = {p.name for p in paths}
    assert {"records.jsonl", "report.json", "report.md"} <= names
    pngs = [p for p in paths if p.suffix == ".png"]
    assert len(pngs) >= 2
    for p in pngs:
        assert p.read_bytes()[:8] == PNG_SIGNATURE
    lines = (tmp_path / "report" / "records.jsonl").read_text().splitlines()
    assert [json.loads(line)["name"] for line in lines] == [r["name"] for r in records]
    assert json.loads((tmp_path / "report" / "report.json").read_text()) == report
    assert not list((tmp_path / "report").glob(".*.tmp"))


def test_compare_lists_change(report):
    faster = json.loads(json.dumps(report))
    faster["models"][2]["decode_tok_s_p50"] = 100.0
    md = compare(report, faster)
    row = next(line for line in md.splitlines() if line.startswith("| bundle-int8 | decode_tok_s_p50 |"))
    assert "+25.0%" in row


def test_baseline_note_reads_the_distill_report(tmp_path):
    from edgestill.benchmarks.__main__ import baseline_note

    assert baseline_note(tmp_path) == []  # no distill report: no note
    (tmp_path / "student").mkdir()
    report = {"baselines": {"sft": {"quality": {"rouge_l_vs_teacher": 0.3435}},
                            "echo_input": {"quality": {"rouge_l_vs_teacher": 0.4761}},
                            "teacher_noise": {"quality": {"rouge_l_vs_teacher": 0.7975}, "runs": [
                                {"sigma": 0.01, "quality": {"rouge_l_vs_teacher": 0.7975}},
                                {"sigma": 0.03, "quality": {"rouge_l_vs_teacher": 0.6371}}]}}}
    (tmp_path / "student" / "distill_report.json").write_text(json.dumps(report))
    [note] = baseline_note(tmp_path)
    assert "trained on hard targets only 0.344" in note and "the input itself as the answer (no model) 0.476" in note
    assert "with 1% weight noise 0.797" in note and "with 3% weight noise 0.637" in note
    assert note.count("0.797") == 1


def test_gain_note_gives_the_interval_and_paired_gains():
    from edgestill.benchmarks.__main__ import gain_note

    assert gain_note({"quality": {"rouge_l_vs_teacher": 0.4}}) == []  # an older report: no note
    report = {"quality": {"n_eval": 24, "rouge_l_vs_teacher": 0.4126, "rouge_l_vs_teacher_ci95": [0.3712, 0.4561]},
              "comparisons": {"sft": {"rouge_l_vs_teacher": {"gain": 0.0496, "ci95": [-0.0101, 0.1123]}},
                              "echo_input": {"rouge_l_vs_teacher": {"gain": -0.0635, "ci95": [-0.1204, -0.0048]}}}}
    [note] = gain_note(report)
    assert "0.413 (95% bootstrap interval 0.371 to 0.456, 24 eval inputs)" in note
    assert "minus the same student trained on hard targets only +0.050 (-0.010 to +0.112: not distinguishable from it)" in note
    assert "minus the input itself as the answer (no model) -0.064 (-0.120 to -0.005: below it)" in note


def test_readme_results_section_is_generated_between_its_markers(report, tmp_path):
    from edgestill.benchmarks.readme import END, START, main, update
    from edgestill.errors import UserError

    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nintro\n\n{START}\nold typed table\n{END}\n\n## After\n")
    (tmp_path / "report.json").write_text(json.dumps(report))
    assert main([str(tmp_path / "report.json"), str(readme)]) == 0
    text = readme.read_text()
    assert "old typed table" not in text and text.startswith("# Title\n\nintro\n\n") and text.endswith("## After\n")
    inside = text[text.index(START):text.index(END)]
    assert "bundle-int8" in inside and "teacher-bundle-fp32" in inside
    assert "Test CPU" in inside and inside.count("\n|") >= 4  # header, rule, three models
    assert update(text, report) == text  # regenerating changes nothing
    with pytest.raises(UserError, match="results:start"):
        update("# no markers\n", report)


def test_a_recipe_with_its_own_readme_markers_updates_only_its_section(report):
    from edgestill.benchmarks.readme import END, START, update

    name = report["settings"]["recipe"]
    text = f"{START}\nplain\n{END}\n<!-- results:{name}:start -->\nmine\n<!-- results:{name}:end -->\n"
    out = update(text, report)
    assert "plain" in out and "mine" not in out and out.index(f"results:{name}:start") < out.index("bundle-int8")
    other = dict(report, settings=dict(report["settings"], recipe="someone-else"))
    assert "plain" not in update(text, other)  # no markers of its own: the plain section


def test_llama_cpp_gguf_is_set_against_our_bundle_of_the_same_width(records):
    from edgestill.benchmarks.readme import section

    gguf = record("x-gguf-q8_0", "student", "gguf-q8_0", 50_000_000, 55_000_000, 100.0, 0.6) | {"engine": "llama.cpp"}
    f16 = record("x-gguf-f16", "student", "gguf-f16", 50_000_000, 100_000_000, 30.0, 0.6) | {"engine": "llama.cpp"}
    report = build_report(MACHINE, {"recipe": "x", "threads": 2}, [*records, gguf, f16])
    half, q8 = (n for n in report["notes"] if n.startswith("llama.cpp gguf-"))
    assert q8.startswith("llama.cpp gguf-q8_0 vs our runtime int8 (bundle-int8): llama.cpp decodes 1.25x faster "
                         "(100.0 vs 80.0 tok/s)")
    assert half == ("llama.cpp gguf-f16 vs our runtime fp32 (bundle-fp32): our runtime decodes 1.33x faster "
                    "(30.0 vs 40.0 tok/s); first token: llama.cpp 133.3 ms, ours 100.0 ms; "
                    "ROUGE-L vs the teacher: llama.cpp 0.600, ours 0.620")
    assert [m["label"] for m in report["peers"]] == ["x-gguf-f16 (llama.cpp)", "x-gguf-q8_0 (llama.cpp)"]
    assert q8 in section(report) and half in section(report)


def test_a_board_report_names_the_measured_device_and_the_harness(records):
    board = {**MACHINE, "cpu": "Cortex-A76", "arch": "aarch64", "executable": "/opt/venv/bin/python"}
    on_board = [r | {"target": "ssh://edgebox", "machine": board} for r in records]
    text = render(build_report(MACHINE, {"recipe": "x"}, on_board))
    assert "- `ssh://edgebox`: Cortex-A76 (aarch64)" in text and "(/opt/venv/bin/python)" in text
    assert "**Harness** (ran the benchmark and scored quality): Test CPU" in text
    assert "**Machine:** Test CPU" in render(build_report(MACHINE, {"recipe": "x"}, records))
