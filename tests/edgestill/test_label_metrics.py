"""Golden values for the label-task scores (edgestill/label_metrics.py)."""

import pytest

from edgestill.label_metrics import label_scores, macro_f1

LABELS = ["positive", "negative"]


def test_macro_f1_by_hand():
    golds = ["positive", "positive", "negative", "negative"]
    preds = ["positive", "negative", "negative", "negative"]
    # positive: tp 1, fp 0, fn 1 -> 2/3; negative: tp 2, fp 1, fn 0 -> 4/5; mean 11/15
    assert macro_f1(preds, golds, LABELS) == pytest.approx((2 / 3 + 4 / 5) / 2)


def test_majority_answer_scores_accuracy_but_not_macro_f1():
    golds = ["positive"] * 8 + ["negative"] * 2
    s = label_scores(["positive"] * 10, golds, LABELS)
    assert s["accuracy"] == 0.8 and s["majority_accuracy"] == 0.8
    assert s["macro_f1"] == pytest.approx((2 * 8 / (16 + 2) + 0) / 2, abs=1e-4)
    lo, hi = s["accuracy_ci95"]
    assert lo <= 0.8 <= hi and hi <= 1.0


def test_perfect_and_misaligned():
    s = label_scores(LABELS * 5, LABELS * 5, LABELS)
    assert s["accuracy"] == 1.0 and s["macro_f1"] == 1.0 and s["macro_f1_ci95"] == [1.0, 1.0]
    with pytest.raises(ValueError):
        label_scores(["positive"], ["positive", "negative"], LABELS)
