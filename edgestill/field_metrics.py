"""A fields task's answers (`task.fields`): checked as JSON objects and scored against ground truth.

    field_problem('{"day": "Friday"}', ["day", "time"])   -> "lacks the field 'time'"  (None when fine)
    field_scores(predictions, golds, fields) -> {"n", "exact_match", "exact_match_ci95", "field_f1",
        "field_f1_ci95", "json_valid", "json_valid_ci95", "per_example": {"correct", "field_f1", "json_valid"}}

An answer is valid when it parses as a JSON object with exactly the fields, in order, each value a
string or null. `exact_match`: every field equal to the gold value after stripping spaces (null
counts as ""); `field_f1`: per example the mean over the fields of the token-level F1 between
predicted and gold value (lower-cased word tokens, edgestill/metrics.py; two empty values score 1),
averaged over examples; `json_valid`: the share of valid answers (an invalid one scores 0 on both
others). Intervals: percentile bootstraps over the examples (edgestill/intervals.py). Plain Python.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Sequence

from edgestill.intervals import interval
from edgestill.metrics import words


def field_problem(text: str, fields: Sequence[str]) -> str | None:
    """What keeps `text` from being a JSON object of exactly `fields` (in order, values strings or
    null), in a few words; None when it is one."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return f"{text[:60]!r} is not JSON"
    if not isinstance(value, dict):
        return f"{text[:60]!r} is not a JSON object"
    missing = [f for f in fields if f not in value]
    if missing:
        return f"lacks the field {missing[0]!r}"
    extra = [k for k in value if k not in fields]
    if extra:
        return f"has the field {extra[0]!r}, which is not in task.fields"
    if list(value) != list(fields):
        return f"has the fields in another order ({', '.join(value)})"
    bad = next((k for k, v in value.items() if v is not None and not isinstance(v, str)), None)
    return f"has a value for {bad!r} that is not a string or null" if bad else None


def parse_fields(text: str, fields: Sequence[str]) -> dict | None:
    """The object of `text` when it is valid (see `field_problem`), else None."""
    return None if field_problem(text, fields) else json.loads(text)


def overlapping_values(answer: dict) -> bool:
    """Two non-null values of a fields answer are equal, or one lies inside the other (a value copied
    into two fields, or a span that swallows another field's value)."""
    values = [v for v in answer.values() if v]
    return any(i != j and a in b for i, a in enumerate(values) for j, b in enumerate(values))


def value_f1(prediction: str | None, gold: str | None) -> float:
    """Token-level F1 between two values (lower-cased word tokens; None counts as empty)."""
    p, g = words(prediction or ""), words(gold or "")
    if not p and not g:
        return 1.0
    common = sum((Counter(p) & Counter(g)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def _same(prediction: str | None, gold: str | None) -> bool:
    return (prediction or "").strip() == (gold or "").strip()


def example_scores(prediction: str, gold: str, fields: Sequence[str]) -> tuple[float, float, float]:
    """(exact match, field F1, valid) of one answer against its gold answer (a valid JSON text)."""
    answer, truth = parse_fields(prediction, fields), json.loads(gold)
    if not isinstance(truth, dict):
        raise ValueError(f"gold answer {gold[:60]!r} is not a JSON object")
    if answer is None:
        return 0.0, 0.0, 0.0
    exact = all(_same(answer[f], truth.get(f)) for f in fields)
    f1 = sum(value_f1(answer[f], truth.get(f)) for f in fields) / len(fields)
    return float(exact), f1, 1.0


def field_scores(predictions: Sequence[str], golds: Sequence[str], fields: Sequence[str]) -> dict:
    """Exact match, field F1 and JSON validity of `predictions` against `golds`, with 95% intervals
    and the per-example scores (`correct`: exact match as 0/1)."""
    rows = [example_scores(p, g, fields) for p, g in zip(predictions, golds, strict=True)]
    if not rows:
        raise ValueError("need at least one prediction and gold answer")
    out: dict = {"n": len(rows)}
    per_example = {}
    for j, name in enumerate(("exact_match", "field_f1", "json_valid")):
        values = [r[j] for r in rows]
        out[name] = round(sum(values) / len(values), 4)
        out[f"{name}_ci95"] = interval(values)
        per_example[name] = [round(v, 4) for v in values]
    per_example["correct"] = [int(v) for v in per_example.pop("exact_match")]
    out["per_example"] = per_example
    return out
