"""Bootstrap intervals of eval means (edgestill/intervals.py) and their use in distill's evaluation."""

import numpy as np
import pytest

from edgestill.intervals import interval, paired_gain, verdict


def test_interval_brackets_the_mean_and_narrows_with_more_examples():
    rng = np.random.default_rng(1)
    few, many = rng.uniform(size=24), rng.uniform(size=384)
    lo, hi = interval(few)
    assert lo < few.mean() < hi
    lo2, hi2 = interval(many)
    assert lo2 < many.mean() < hi2
    assert (hi2 - lo2) < 0.5 * (hi - lo)  # 16x the examples: about a quarter of the width


def test_interval_of_a_constant_is_a_point_and_is_reproducible():
    assert interval([0.4] * 10) == [0.4, 0.4]
    values = np.random.default_rng(0).uniform(size=24).tolist()
    assert interval(values, seed=3) == interval(values, seed=3)
    assert interval(values, seed=3) != interval(values, seed=4)


def test_weighted_interval_is_that_of_a_ratio():
    # five one-token answers all agreeing, five nine-token answers none: the token-weighted mean
    # is 5/50 = 0.1, far from the unweighted 0.5, and so is its interval
    values, weights = [1.0] * 5 + [0.0] * 5, [1] * 5 + [9] * 5
    lo, hi = interval(values, weights=weights)
    assert 0.0 <= lo < 0.1 < hi < 0.5
    ulo, uhi = interval(values)
    assert ulo < 0.5 < uhi and hi < uhi


def test_paired_gain_is_tight_when_one_model_is_ahead_on_every_example():
    rng = np.random.default_rng(2)
    base = rng.uniform(0.1, 0.8, size=24)  # inputs of very different difficulty
    better = base + 0.05
    g = paired_gain(better, base)
    assert g["gain"] == pytest.approx(0.05, abs=1e-4)
    assert g["ci95"] == [pytest.approx(0.05, abs=1e-4)] * 2 and g["share_above_zero"] == 1.0
    assert verdict(g) == "above" and verdict(paired_gain(base, better)) == "below"
    # unpaired, the two intervals overlap: pairing is what shows the gain
    assert interval(better)[0] < interval(base)[1]


def test_paired_gain_of_a_coin_flip_straddles_zero():
    rng = np.random.default_rng(3)
    a, b = rng.uniform(size=24), rng.uniform(size=24)
    g = paired_gain(a, b)
    assert g["ci95"][0] < g["gain"] < g["ci95"][1]
    assert g["gain"] == pytest.approx(float(a.mean() - b.mean()), abs=1e-4)
    assert verdict(g) == "not distinguishable from"
    identical = paired_gain(a, a)
    assert identical == {"gain": 0.0, "ci95": [0.0, 0.0], "share_above_zero": 0.0}


@pytest.mark.parametrize("args, kwargs", [(([],), {}), (([0.1, 0.2],), {"weights": [1]}),
                                          (([0.1, 0.2],), {"weights": [0, 0]}), (([0.1], [0.1, 0.2]), {})])
def test_bad_lists_are_refused(args, kwargs):
    with pytest.raises(ValueError):
        (paired_gain if len(args) == 2 else interval)(*args, **kwargs)


def test_compare_pairs_rouge_and_token_weighted_agreement():
    from edgestill.distill.evaluate import compare

    student = {"per_example": {"rouge_l_vs_teacher": [0.5, 0.7], "agreeing_tokens": [3, 8], "answer_tokens": [4, 10]}}
    sft = {"per_example": {"rouge_l_vs_teacher": [0.4, 0.4], "agreeing_tokens": [2, 5], "answer_tokens": [4, 10]}}
    echo = {"per_example": {"rouge_l_vs_teacher": [0.6, 0.6]}}
    gains = compare(student, sft)
    assert gains["rouge_l_vs_teacher"]["gain"] == pytest.approx(0.2)
    assert gains["token_agreement_vs_teacher"]["gain"] == pytest.approx((11 - 7) / 14, abs=1e-4)
    assert set(compare(student, echo)) == {"rouge_l_vs_teacher"}  # no teacher forcing for the echo
    assert compare(student, echo)["rouge_l_vs_teacher"]["gain"] == pytest.approx(0.0)


def test_warnings_name_the_baseline_the_student_is_clearly_below():
    from edgestill.distill.evaluate import warnings_from

    below = {"gain": -0.06, "ci95": [-0.12, -0.005], "share_above_zero": 0.02}
    unclear = {"gain": 0.05, "ci95": [-0.008, 0.104], "share_above_zero": 0.96}
    warnings = warnings_from({"sft": {"rouge_l_vs_teacher": unclear, "token_agreement_vs_teacher": below},
                              "echo_input": {"rouge_l_vs_teacher": below}})
    assert len(warnings) == 1  # ROUGE-L only; an unclear gain is no warning
    assert "below the echo_input baseline" in warnings[0] and "task.n_train" in warnings[0]
    assert warnings_from({"sft": {"rouge_l_vs_teacher": below}})[0].endswith("and distill.lr")
