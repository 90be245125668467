"""Golden values for a fields task's checks and scores (edgestill/field_metrics.py)."""

import pytest

from edgestill.field_metrics import field_problem, field_scores, value_f1

FIELDS = ["day", "time", "place"]
GOLD = '{"day": "Friday", "time": "7 pm", "place": "Rosa\'s Cafe"}'


@pytest.mark.parametrize("text, problem", [
    (GOLD, None),
    ('{"day": null, "time": "", "place": "x"}', None),
    ("Friday at 7", "is not JSON"),
    ('["Friday"]', "is not a JSON object"),
    ('{"day": "Friday", "place": "x"}', "lacks the field 'time'"),
    ('{"day": "a", "time": "b", "place": "c", "who": "d"}', "has the field 'who'"),
    ('{"time": "b", "day": "a", "place": "c"}', "another order"),
    ('{"day": 5, "time": "b", "place": "c"}', "'day' that is not a string or null"),
])
def test_field_problem_names_what_is_wrong(text, problem):
    found = field_problem(text, FIELDS)
    assert (found is None) if problem is None else (problem in found)


def test_value_f1_by_hand():
    assert value_f1("Rosa's Cafe", "Rosa's Cafe") == 1.0
    # "the rosa s" vs "rosa s cafe": 2 common of 3 and 3 -> 2/3
    assert value_f1("the Rosa's", "Rosa's Cafe") == pytest.approx(2 / 3)
    assert value_f1(None, "") == 1.0 and value_f1("noon", None) == 0.0


def test_field_scores_by_hand():
    answers = [GOLD,                                                           # all right
               '{"day": "Friday ", "time": "7", "place": "the Rosa\'s Cafe"}',  # day right (strip); 7 of "7 pm"
               "not json"]                                                     # invalid: 0 everywhere
    s = field_scores(answers, [GOLD] * 3, FIELDS)
    second = (1.0 + 2 * 0.5 * 1 / 1.5 + 2 * 1 * 0.75 / 1.75) / 3  # day 1, time p1 r1/2, place p3/4 r1
    assert s["per_example"] == {"correct": [1, 0, 0], "field_f1": [1.0, round(second, 4), 0.0],
                                "json_valid": [1.0, 1.0, 0.0]}
    assert s["exact_match"] == round(1 / 3, 4) and s["json_valid"] == round(2 / 3, 4)
    assert s["field_f1"] == round((1.0 + second) / 3, 4)
    lo, hi = s["field_f1_ci95"]
    assert 0.0 <= lo <= s["field_f1"] <= hi <= 1.0
    with pytest.raises(ValueError):
        field_scores([GOLD], [GOLD, GOLD], FIELDS)
