"""Quality scoring on hand-made records: known outputs give known ROUGE-L figures."""

from __future__ import annotations

import json

import pytest

from edgestill.benchmarks.quality import (
    eval_records,
    field_figures,
    gains_note,
    gains_over,
    score,
)
from edgestill.errors import UserError
from edgestill.metrics import rouge_l


def write_data(folder, records):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "teacher.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def test_score_vs_teacher_identical_and_disjoint():
    records = [{"input": "a", "output": "the cat sat"}, {"input": "b", "output": "dogs bark loudly"}]
    result = score(["The cat sat.", "birds sing"], records)
    # scores 1 and 0: resampled means 0, 0.5 or 1, so the 95% interval spans all of [0, 1]
    assert result == {"rouge_l_vs_teacher": 0.5, "rouge_l_vs_teacher_ci95_lo": 0.0, "rouge_l_vs_teacher_ci95_hi": 1.0}


def test_score_partial_overlap_and_labels():
    # prediction "the cat sat" vs reference "the cat sat down": lcs 3, p 1, r 3/4 -> f1 6/7
    records = [{"input": "x", "output": "the cat sat down", "label": "the cat sat"}]
    result = score(["the cat sat"], records)
    assert result["rouge_l_vs_teacher"] == pytest.approx(6 / 7, abs=1e-4)
    assert result["rouge_l_vs_label"] == 1.0
    assert result["rouge_l_vs_teacher_ci95_lo"] == result["rouge_l_vs_teacher_ci95_hi"] == round(6 / 7, 4)


def test_score_leaves_out_label_figure_when_labels_missing():
    records = [{"input": "x", "output": "a b", "label": "a b"}, {"input": "y", "output": "c"}]
    assert "rouge_l_vs_label" not in score(["a b", "c"], records)


def test_eval_records_keeps_eval_split_in_order_and_caps(tmp_path):
    records = [{"id": i, "split": "eval" if i % 2 else "train", "input": str(i), "output": str(i)}
               for i in range(10)]
    data = write_data(tmp_path / "data", records)
    assert [r["id"] for r in eval_records(data)] == [1, 3, 5, 7, 9]
    assert [r["id"] for r in eval_records(data, limit=2)] == [1, 3]


def test_eval_records_missing_file_names_distill(tmp_path):
    with pytest.raises(UserError, match="edgestill distill"):
        eval_records(tmp_path / "data")


def test_eval_records_without_eval_split(tmp_path):
    data = write_data(tmp_path / "data", [{"id": 0, "split": "train", "input": "a", "output": "b"}])
    with pytest.raises(UserError, match="split == 'eval'"):
        eval_records(data)


def test_gains_over_the_fp32_bundle_are_paired_per_input():
    def rows(outputs):
        return [{"teacher": t, "output": o, "rouge_l_vs_teacher": rouge_l(o, t)}  # as bundle_quality writes them
                for t, o in zip(["a b c d", "e f g h", "i j k l"], outputs)]

    by_model = {"s-fp32": rows(["a b c d", "e f x x", "z z z z"]),  # ROUGE-L 1, 0.5, 0
                "s-int8": rows(["a b c d", "e f x x", "z z z z"]),  # the same answers
                "s-int4": rows(["a b x x", "e x x x", "z z z z"])}  # 0.5, 0.25, 0: worse on two inputs
    gains = gains_over(by_model, "s-fp32")
    assert set(gains) == {"s-int8", "s-int4"}
    assert gains["s-int8"] == {"gain": 0.0, "ci95": [0.0, 0.0], "share_above_zero": 0.0}
    assert gains["s-int4"]["gain"] == pytest.approx(-0.25, abs=1e-4) and gains["s-int4"]["ci95"][1] <= 0
    [note] = gains_note(gains, "s-fp32")
    assert "each bundle minus s-fp32" in note and "s-int8 +0.000 (+0.000 to +0.000: not distinguishable from it)" in note
    assert gains_over(by_model, "missing") == {} and gains_note({}, "s-fp32") == []


def test_field_figures_of_hand_made_answers():
    gold = '{"day": "Friday", "time": "7 pm"}'
    records = [{"input": "a", "output": gold, "label": gold}, {"input": "b", "output": gold, "label": gold}]
    result = field_figures([gold, '{"day": "Friday", "time": "noon"}'], records, ["day", "time"])
    # exact 1 and 0; field F1 1 and (1 + 0) / 2; both valid JSON
    assert result == {"json_valid": 1.0, "json_valid_ci95_lo": 1.0, "json_valid_ci95_hi": 1.0,
                      "exact_match_vs_label": 0.5, "exact_match_vs_label_ci95_lo": 0.0,
                      "exact_match_vs_label_ci95_hi": 1.0, "field_f1_vs_label": 0.75,
                      "field_f1_vs_label_ci95_lo": 0.5, "field_f1_vs_label_ci95_hi": 1.0}
    assert field_figures(["x"], records[:1], None) == {}
    unlabelled = field_figures(["not json"], [{"input": "a", "output": gold}], ["day", "time"])
    assert unlabelled == {"json_valid": 0.0, "json_valid_ci95_lo": 0.0, "json_valid_ci95_hi": 0.0}
