"""The ground-truth headline on hand-made runs: the metric chosen per task shape, the rows (teacher,
students, bundles, baselines), retention and its paired interval, report.md, README and the chart."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgestill.benchmarks.headline import build_headline, headline_metric, request_ms
from edgestill.benchmarks.markdown import render
from edgestill.benchmarks.quality import label_figures, score
from edgestill.benchmarks.readme import section
from edgestill.benchmarks.report import build_report, write_report
from edgestill.benchmarks.retention import paired_ratio, retention
from edgestill.intervals import LEVEL, RESAMPLES

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MACHINE = {"cpu": "Test CPU", "arch": "x86_64", "cores_logical": 2, "ram_gb": 8.0, "os": "Linux",
           "python": "3.11", "onnxruntime": "1.31.1", "tool_version": "0.1.0", "git_commit": None}
LABELS = ["positive", "negative"]
N = 40


def record(name, role, precision, params, file_bytes, ttft, tok_s, quality):
    return {"name": name, "role": role, "precision": precision, "params": params, "file_bytes": file_bytes,
            "peak_rss_mb": file_bytes / 1e6 + 50, "load_s": 0.5, "ttft_ms_p50": ttft, "ttft_ms_p90": ttft * 1.2,
            "decode_ms_p50": 1000.0 / tok_s, "decode_ms_p90": 1100.0 / tok_s, "decode_tok_s_p50": tok_s,
            "bundle": f"build/x/{name}", "bundle_sha256": "0" * 64, "quantization": None, "threads": 2,
            "quality": quality, "machine": MACHINE}


def flip(label):
    return LABELS[1 - LABELS.index(label)]


def answers(golds, right):
    """The gold label on the examples in `right`, the other label elsewhere."""
    return [g if i in right else flip(g) for i, g in enumerate(golds)]


def answer_rows(evals, outputs):
    """Per-example rows as benchmarks.quality.bundle_quality writes them."""
    return [{"id": r["id"], "input": r["input"], "teacher": r["output"], "label": r["label"], "output": o,
             "rouge_l_vs_teacher": 1.0} for r, o in zip(evals, outputs)]


# ---------------------------------------------------------------- a label task

@pytest.fixture(scope="module")
def label_run():
    """40 labelled eval examples (24 positive): the teacher right on 0-29, the fp32 bundle on the same
    ones, the int8 bundle on 0-26 only, the PyTorch student on 0-27."""
    golds = ["positive"] * 24 + ["negative"] * 16
    teacher = answers(golds, range(30))
    evals = [{"id": i, "input": f"text {i}", "output": t, "label": g} for i, (t, g) in enumerate(zip(teacher, golds))]
    outputs = {"teacher-fp32": teacher, "tiny-fp32": teacher, "tiny-int8": answers(golds, range(27))}
    quality = {name: {**score(out, evals), **label_figures(out, evals, LABELS)} for name, out in outputs.items()}
    records = [record("tiny-int8", "student", "int8", 30_000_000, 40_000_000, 50.0, 80.0, quality["tiny-int8"]),
               record("teacher-fp32", "teacher", "fp32", 135_000_000, 540_000_000, 200.0, 20.0,
                      quality["teacher-fp32"]),
               record("tiny-fp32", "student", "fp32", 30_000_000, 120_000_000, 60.0, 40.0, quality["tiny-fp32"])]
    student = [int(i < 28) for i in range(N)]
    distill = {
        "teacher": {"params": 135_000_000}, "student": {"params": 30_000_000},
        "quality": {"accuracy_vs_label": 0.7, "accuracy_vs_label_ci95": [0.55, 0.85], "macro_f1_vs_label": 0.69,
                    "macro_f1_vs_label_ci95": [0.5, 0.84], "teacher_accuracy_vs_label": 0.75,
                    "teacher_accuracy_vs_label_ci95": [0.6, 0.875], "teacher_macro_f1_vs_label": 0.74,
                    "majority_label_accuracy": 0.6, "rouge_l_vs_label": 0.7, "rouge_l_vs_teacher": 0.8,
                    "teacher_best_accuracy_vs_label": 0.8, "teacher_best_accuracy_vs_label_ci95": [0.675, 0.9],
                    "teacher_best_procedure": "5-shot"},
        "per_example": {"correct_vs_label": student, "rouge_l_vs_teacher": [1.0] * N},
        "baselines": {"init": {"quality": {"accuracy_vs_label": 0.5, "accuracy_vs_label_ci95": [0.35, 0.65]},
                               "per_example": {"correct_vs_label": [i % 2 for i in range(N)]}},
                      "sft": {"quality": {"accuracy_vs_label": 0.65, "accuracy_vs_label_ci95": [0.5, 0.8]},
                              "per_example": {"correct_vs_label": [int(i < 26) for i in range(N)]}},
                      "teacher_noise": {"quality": {"rouge_l_vs_teacher": 0.8}, "runs": []},
                      "echo_input": {"quality": {"rouge_l_vs_teacher": 0.1, "rouge_l_vs_label": 0.0}}}}
    report = build_report(MACHINE, {"recipe": "labels", "threads": 2, "prompt_tokens": 64}, records)
    rows = {name: answer_rows(evals, out) for name, out in outputs.items()}
    report["headline"] = build_headline(distill, report["models"], rows, evals, answer_tokens=3, prompt_tokens=64)
    return report


def by_name(headline):
    return {r["name"]: r for r in headline["rows"]}


def test_label_task_headline_is_accuracy_with_macro_f1_beside_it(label_run):
    h = label_run["headline"]
    assert (h["metric"], h["name"]) == ("accuracy_vs_label", "accuracy")
    assert h["secondary"] == [["macro_f1_vs_label", "macro-F1"]]
    assert h["reference"] == "teacher, zero-shot" and h["examples"] == N


def test_label_task_rows_teacher_students_bundles_baselines(label_run):
    rows = label_run["headline"]["rows"]
    assert [r["name"] for r in rows] == [
        "teacher, zero-shot", "teacher, best prompt (5-shot)", "teacher-fp32", "student (fp32, PyTorch)",
        "tiny-fp32", "tiny-int8", "untrained init", "SFT only (hard targets)", "always the majority label"]
    r = by_name(label_run["headline"])
    assert r["teacher, zero-shot"]["score"]["value"] == 0.75  # its recorded answers against the labels
    assert r["teacher, best prompt (5-shot)"]["score"] == {"value": 0.8, "ci95": [0.675, 0.9]}
    assert r["student (fp32, PyTorch)"]["score"] == {"value": 0.7, "ci95": [0.55, 0.85]}
    assert r["student (fp32, PyTorch)"]["secondary"]["macro_f1_vs_label"] == {"value": 0.69, "ci95": [0.5, 0.84]}
    assert r["tiny-int8"]["score"]["value"] == 0.675 and r["tiny-fp32"]["score"]["value"] == 0.75
    assert r["always the majority label"]["score"]["value"] == 0.6
    assert r["tiny-int8"]["params"] == 30_000_000 and r["tiny-int8"]["file_bytes"] == 40_000_000
    assert r["untrained init"]["params"] == 30_000_000 and r["always the majority label"]["params"] is None


def test_request_latency_is_prefill_plus_the_answer_tokens(label_run):
    r = by_name(label_run["headline"])
    assert r["tiny-int8"]["request_ms"] == 87.5  # 50 ms TTFT + 3 tokens at 80 tok/s
    assert r["teacher-fp32"]["request_ms"] == 350.0  # 200 + 3 x 50
    assert r["student (fp32, PyTorch)"]["request_ms"] is None  # not measured in our runtime
    assert request_ms({"ttft_ms_p50": 10.0, "decode_tok_s_p50": None}, 3) is None


def test_retention_is_student_over_teacher_with_a_paired_interval(label_run):
    r = by_name(label_run["headline"])
    assert r["teacher, zero-shot"]["retention"] is None  # the reference
    int8 = r["tiny-int8"]["retention"]
    assert int8["value"] == 0.9 and int8["paired"] is True  # 27 / 30 examples right
    assert int8["ci95"] == [0.7812, 1.0]  # right only where the teacher is right: never above it
    assert r["tiny-fp32"]["retention"] == {"value": 1.0, "ci95": [1.0, 1.0], "paired": True}
    student = r["student (fp32, PyTorch)"]["retention"]  # distill's per-example list, paired by position
    assert student["value"] == pytest.approx(28 / 30, abs=1e-4) and student["paired"] is True
    assert r["always the majority label"]["retention"]["value"] == 0.8  # 24 / 30


def test_retention_without_per_example_scores_is_a_point_ratio(label_run):
    best = by_name(label_run["headline"])["teacher, best prompt (5-shot)"]["retention"]
    assert best == {"value": pytest.approx(0.8 / 0.75, abs=1e-4), "ci95": None, "paired": False}
    assert retention(None, [1.0, 0.0], 0.3, 0.6) == {"value": 0.5, "ci95": None, "paired": False}
    assert retention([1.0], [1.0, 1.0], 0.3, 0.6)["paired"] is False  # lists of other examples: not paired
    assert retention(None, None, 0.3, None) is None


def unpaired_ratio_interval(student, teacher, seed=0):
    """The interval one would get by resampling the two lists independently (what retention must not do)."""
    rng = np.random.default_rng(seed)
    s, t = np.asarray(student, float), np.asarray(teacher, float)
    ratios = [s[rng.integers(0, N, N)].mean() / t[rng.integers(0, N, N)].mean() for _ in range(RESAMPLES)]
    tail = (1 - LEVEL) / 2 * 100
    return np.percentile(ratios, [tail, 100 - tail])


def test_paired_interval_is_far_tighter_than_an_unpaired_one():
    teacher = [float(i < 30) for i in range(N)]
    student = [float(i < 27) for i in range(N)]  # right only where the teacher is right
    paired = paired_ratio(student, teacher)
    lo, hi = unpaired_ratio_interval(student, teacher)
    assert hi > 1.05 and lo < 0.7  # independent resamples: the student could look better than the teacher
    assert paired["ci95"] == [0.7812, 1.0] and paired["ci95"][1] - paired["ci95"][0] < (hi - lo) / 2
    assert paired_ratio([1.0], [0.0]) is None and paired_ratio([1.0, 1.0], [1.0]) is None


def test_report_md_leads_with_the_headline_table(label_run):
    md = render(label_run)
    first = md.split("\n## ")[0]
    header = next(line for line in first.splitlines() if line.startswith("| model |"))
    assert header == ("| model | what | accuracy (95% CI) | macro-F1 | retention vs teacher (paired 95% CI) | params | "
                      "bundle MB | request ms (TTFT at 64-token prompt + 3 answer tokens at p50 decode) |")
    int8 = next(line for line in first.splitlines() if line.startswith("| tiny-int8 |"))
    assert int8.startswith("| tiny-int8 | bundle, our runtime | 0.675 (")
    assert "| 0.900 (0." in int8 and int8.endswith("| 30.0M | 40.0 | 87.5 |")
    best = next(line for line in first.splitlines() if line.startswith("| teacher, best prompt (5-shot) |"))
    assert "| 0.800 (0.675-0.900) |" in best and "| 1.067 (no interval) |" in best
    assert "| always the majority label | baseline, no model | 0.600 (" in first
    assert "![accuracy against request latency](headline_latency.png)" in first
    assert "## Speed, memory and every quality figure" in md  # the per-model table follows


def test_readme_leads_with_ground_truth_and_retention(label_run):
    text = section(label_run)
    header = next(line for line in text.splitlines() if line.startswith("| model |"))
    assert header.startswith("| model | accuracy (95% CI) | macro-F1 | retention vs teacher (paired 95% CI) | params |")
    assert header.endswith("| peak RSS MB | decode tok/s |")
    assert "**accuracy** on 40 held-out examples; retention = the score ÷ teacher, zero-shot's" in text
    int8 = next(line for line in text.splitlines() if line.startswith("| tiny-int8 |"))
    assert int8.startswith("| tiny-int8 | 0.675 (") and "| 0.900 (" in int8 and int8.endswith("| 90.0 | 80.0 |")
    assert "**tiny-int8** vs teacher-fp32: 13.50x smaller files" in text  # the ratio lines stay


def test_the_chart_is_written_and_linked(label_run, tmp_path):
    paths = write_report(tmp_path, label_run, [])
    chart = tmp_path / "headline_latency.png"
    assert chart in paths and chart.read_bytes()[:8] == PNG_SIGNATURE
    assert {"speed_memory.png", "size_quality.png", "quality_speed.png"} <= {p.name for p in paths}
    assert "(headline_latency.png)" in (tmp_path / "report.md").read_text()


def test_chart_labels_do_not_overlap():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.text import Text

    from edgestill.benchmarks.plots import box_around, place_labels

    fig = Figure(figsize=(7, 4.8))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    points = [(80.0, 0.70, "default-int4"), (85.0, 0.71, "default-int8"), (90.0, 0.72, "default-fp32"),
              (95.0, 0.70, "default-fp16"), (300.0, 0.75, "teacher-fp32"), (310.0, 0.74, "teacher-int8")]
    ax.scatter([p[0] for p in points], [p[1] for p in points])
    ax.set_xscale("log")
    ax.set_xlim(50, 500)
    ax.set_ylim(0, 1.05)
    anns = place_labels(ax, points)
    renderer = fig.canvas.get_renderer()
    boxes = []
    for a in anns:
        a.update_positions(renderer)
        boxes.append(Text.get_window_extent(a, renderer))
    assert sorted(a.get_text() for a in anns) == sorted(p[2] for p in points)
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    dots = [box_around(ax.transData.transform(p[:2]), 4) for p in points]
    assert not any(box.overlaps(dot) for box in boxes for dot in dots)


# ------------------------------------------------- free text with references

NOVEL_NAME = "new words (in neither input nor reference)"

def free_text_run():
    """4 examples with references: the teacher's ROUGE-L vs them 1, 1, 0.5, 0.5; the bundle's 1, 0.5, 0.5, 0."""
    refs = ["a b c d", "e f g h", "i j k l", "m n o p"]
    teacher = ["a b c d", "e f g h", "i j x y", "m n x y"]
    evals = [{"id": i, "input": f"{ref} q r s t", "output": t, "label": ref}
             for i, (ref, t) in enumerate(zip(refs, teacher))]
    outputs = ["a b c d", "e f x y", "i j x y", "x y z w"]
    records = [record("tiny-int8", "student", "int8", 30_000_000, 40_000_000, 50.0, 80.0, score(outputs, evals)),
               record("teacher-fp32", "teacher", "fp32", 135_000_000, 540_000_000, 200.0, 20.0,
                      score(teacher, evals))]
    distill = {"student": {"params": 30_000_000},
               "quality": {"rouge_l_vs_label": 0.55, "rouge_l_vs_teacher": 0.6, "rouge_l_vs_teacher_ci95": [0.4, 0.8],
                           "exact_match_vs_label": 0.25, "teacher_rouge_l_vs_label": 0.75},
               "per_example": {"rouge_l_vs_teacher": [1.0, 0.5, 0.5, 0.4]},  # none vs the references
               "baselines": {"sft": {"quality": {"rouge_l_vs_label": 0.4, "rouge_l_vs_teacher": 0.5}},
                             "echo_input": {"quality": {"rouge_l_vs_label": 0.6667}}}}
    report = build_report(MACHINE, {"recipe": "free", "threads": 2, "prompt_tokens": 64}, records)
    rows = {"tiny-int8": answer_rows(evals, outputs), "teacher-fp32": answer_rows(evals, teacher)}
    report["headline"] = build_headline(distill, report["models"], rows, evals, answer_tokens=48, prompt_tokens=64)
    return report


def test_free_text_headline_is_rouge_l_against_the_references():
    report = free_text_run()
    h = report["headline"]
    assert (h["metric"], h["secondary"]) == ("rouge_l_vs_label", [["rouge_l_vs_teacher", "ROUGE-L vs teacher"],
                                                                   ["novel_word_share", NOVEL_NAME]])
    r = by_name(h)
    # words in neither input nor reference: "x y" in two teacher answers, "x y", "x y", "x y z w" in the bundle's
    assert r["teacher, zero-shot"]["secondary"]["novel_word_share"]["value"] == 0.25
    assert r["tiny-int8"]["secondary"]["novel_word_share"]["value"] == 0.5
    assert r["student (fp32, PyTorch)"]["secondary"]["novel_word_share"] is None  # not in the distill report
    assert list(r) == ["teacher, zero-shot", "teacher-fp32", "student (fp32, PyTorch)", "tiny-int8",
                       "SFT only (hard targets)", "the input as the answer"]
    assert r["teacher, zero-shot"]["score"]["value"] == 0.75 and r["tiny-int8"]["score"]["value"] == 0.5
    assert r["the input as the answer"]["score"]["value"] == pytest.approx(2 / 3, abs=1e-4)  # 4 of 8 words
    assert r["tiny-int8"]["retention"]["value"] == pytest.approx(0.5 / 0.75, abs=1e-4)
    assert r["tiny-int8"]["retention"]["paired"] is True
    # the distill report keeps no per-example ROUGE-L vs the references: point ratio only
    assert r["student (fp32, PyTorch)"]["retention"] == {"value": pytest.approx(0.55 / 0.75, abs=1e-4),
                                                         "ci95": None, "paired": False}
    assert r["tiny-int8"]["request_ms"] == 650.0  # 50 + 48 x 12.5


def test_free_text_readme_keeps_rouge_l_vs_teacher_after_retention():
    text = section(free_text_run())
    header = next(line for line in text.splitlines() if line.startswith("| model |"))
    assert header.startswith(f"| model | ROUGE-L vs reference (95% CI) | {NOVEL_NAME} | retention vs teacher (paired "
                             "95% CI) | ROUGE-L vs teacher | params |")
    teacher = next(line for line in text.splitlines() if line.startswith("| teacher, zero-shot |"))
    assert teacher.startswith("| teacher, zero-shot | 0.750 (") and "| – | reference |" in teacher


# ------------------------------------------------------------ no labelled data

def test_no_labels_keeps_rouge_l_vs_teacher_and_has_no_retention():
    evals = [{"id": i, "input": f"in {i}", "output": "the answer"} for i in range(3)]
    records = [record("tiny-int8", "student", "int8", 30_000_000, 40_000_000, 50.0, 80.0,
                      {"rouge_l_vs_teacher": 0.61, "rouge_l_vs_teacher_ci95_lo": 0.5,
                       "rouge_l_vs_teacher_ci95_hi": 0.7}),
               record("teacher-fp32", "teacher", "fp32", 135_000_000, 540_000_000, 200.0, 20.0, {})]
    distill = {"student": {"params": 30_000_000},
               "quality": {"rouge_l_vs_teacher": 0.63, "rouge_l_vs_teacher_ci95": [0.52, 0.74]},
               "baselines": {"init": {"quality": {"rouge_l_vs_teacher": 0.05, "rouge_l_vs_teacher_ci95": [0.0, 0.1]}},
                             "echo_input": {"quality": {"rouge_l_vs_teacher": 0.2}}}}
    report = build_report(MACHINE, {"recipe": "plain", "threads": 2}, records)
    report["headline"] = build_headline(distill, report["models"], {}, evals, answer_tokens=48, prompt_tokens=64)
    h = report["headline"]
    assert (h["metric"], h["secondary"]) == ("rouge_l_vs_teacher", [])
    r = by_name(h)
    assert list(r) == ["teacher, zero-shot", "teacher-fp32", "student (fp32, PyTorch)", "tiny-int8",
                       "untrained init", "the input as the answer"]
    assert r["tiny-int8"]["score"] == {"value": 0.61, "ci95": [0.5, 0.7]}
    assert r["the input as the answer"]["score"]["value"] == 0.0  # "in 0" shares no word with "the answer"
    assert all(row["retention"] is None for row in h["rows"])
    md = render(report).split("\n## ")[0]
    assert "| teacher-fp32 | bundle, our runtime | reference |" in md and "retention" not in md
    text = section(report)
    assert "| model | ROUGE-L vs teacher (95% CI) | params |" in text and "retention" not in text


def test_headline_metric_per_task_shape():
    assert headline_metric({"accuracy_vs_label": 0.8, "rouge_l_vs_label": 0.8}) == ("accuracy_vs_label", "accuracy")
    extraction = {"exact_match_vs_label": 0.5, "field_f1_vs_label": 0.7, "json_valid": 1.0, "rouge_l_vs_label": 0.8}
    assert headline_metric(extraction) == ("exact_match_vs_label", "exact match")
    assert headline_metric({"json_valid": 0.9, "exact_match_vs_label": 0.5})[0] == "exact_match_vs_label"
    # free text: distill also writes exact_match_vs_label, which does not make it an extraction task
    assert headline_metric({"rouge_l_vs_label": 0.4, "exact_match_vs_label": 0.1})[0] == "rouge_l_vs_label"
    assert headline_metric({"rouge_l_vs_teacher": 0.6}) == ("rouge_l_vs_teacher", "ROUGE-L vs teacher")
    assert headline_metric({}) == ("rouge_l_vs_teacher", "ROUGE-L vs teacher")


def test_extraction_rows_use_the_label_keys():
    """A fields task: exact match leads, field F1 and valid JSON follow; per-example exact match is
    scored from the answers (edgestill.field_metrics), so retention is paired."""
    def answer(day, time):
        return json.dumps({"day": day, "time": time})

    golds = [answer("Friday", "9"), answer("Monday", "10"), answer("Sunday", "noon"), answer("Tuesday", "8")]
    teacher = golds[:3] + [answer("Tuesday", "9")]  # 3 of 4 exact
    outputs = golds[:2] + [answer("Sunday", "12"), "not json"]  # 2 of 4 exact
    evals = [{"id": i, "input": f"meet {i}", "output": t, "label": g} for i, (t, g) in enumerate(zip(teacher, golds))]
    q = {"exact_match_vs_label": 0.5, "exact_match_vs_label_ci95_lo": 0.0, "exact_match_vs_label_ci95_hi": 1.0,
         "field_f1_vs_label": 0.625, "json_valid": 0.75, "rouge_l_vs_teacher": 0.7, "rouge_l_vs_label": 0.7}
    records = [record("tiny-int8", "student", "int8", 30_000_000, 40_000_000, 50.0, 80.0, q)]
    distill = {"task": {"fields": ["day", "time"]},
               "quality": {"exact_match_vs_label": 0.5, "exact_match_vs_label_ci95": [0.0, 1.0],
                           "field_f1_vs_label": 0.82, "json_valid": 1.0, "teacher_exact_match_vs_label": 0.75,
                           "teacher_field_f1_vs_label": 0.9},
               "per_example": {"correct_vs_label": [1, 0, 1, 0], "field_f1_vs_label": [1.0, 0.5, 1.0, 0.5]},
               "baselines": {"echo_input": {"quality": {"rouge_l_vs_teacher": 0.1}}}}
    report = build_report(MACHINE, {"recipe": "extract"}, records)
    h = build_headline(distill, report["models"], {"tiny-int8": answer_rows(evals, outputs)}, evals,
                       answer_tokens=20, prompt_tokens=64)
    assert h["metric"] == "exact_match_vs_label"
    assert h["secondary"] == [["field_f1_vs_label", "field F1"], ["json_valid", "valid JSON"]]
    r = by_name(h)
    assert list(r) == ["teacher, few-shot", "student (fp32, PyTorch)", "tiny-int8"]  # no echo for JSON answers
    assert r["teacher, few-shot"]["score"]["value"] == 0.75  # from its recorded answers (few-shot, as it answers)
    assert r["tiny-int8"]["score"] == {"value": 0.5, "ci95": [0.0, 1.0]}
    assert r["tiny-int8"]["secondary"]["json_valid"]["value"] == 0.75
    int8 = r["tiny-int8"]["retention"]
    assert int8["value"] == pytest.approx(2 / 3, abs=1e-4) and int8["paired"] is True
    assert r["student (fp32, PyTorch)"]["retention"]["value"] == pytest.approx(2 / 3, abs=1e-4)
    assert r["student (fp32, PyTorch)"]["retention"]["paired"] is True
    no_rows = build_headline(distill, report["models"], {}, [], answer_tokens=20, prompt_tokens=64)
    assert by_name(no_rows)["tiny-int8"]["retention"] == {"value": pytest.approx(0.5 / 0.75, abs=1e-4),
                                                          "ci95": None, "paired": False}
