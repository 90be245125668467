"""Retention: a model's headline score as a share of the teacher's, with a paired 95% interval.

    retention(student_scores, teacher_scores)   -> {"value": 0.9, "ci95": [0.83, 0.97], "paired": True}
    retention(None, None, 0.72, 0.80)           -> {"value": 0.9, "ci95": None, "paired": False}

Both models answered the same eval examples, so the interval is a *paired* percentile bootstrap:
each resample draws one set of example indices and takes mean(student) / mean(teacher) over those
same examples (a resample where the teacher scores 0 is left out). Hard examples then count
against both at once, which makes the interval far tighter than dividing two separate intervals.
Without both per-example lists (or when their lengths differ) only the point ratio is given: an
interval is never made up. Resampling is seeded like edgestill/intervals.py, so reports repeat.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from edgestill.intervals import LEVEL, RESAMPLES


def paired_ratio(student: Sequence[float], teacher: Sequence[float], resamples: int = RESAMPLES,
                 seed: int = 0) -> dict | None:
    """mean(student) / mean(teacher) and its paired bootstrap 95% interval; None when the teacher's
    mean is 0 or the lists are empty or of different lengths."""
    s, t = np.asarray(student, dtype=np.float64), np.asarray(teacher, dtype=np.float64)
    if s.ndim != 1 or s.size == 0 or s.shape != t.shape or t.sum() <= 0:
        return None
    idx = np.random.default_rng(seed).integers(0, s.size, size=(resamples, s.size))
    num, den = s[idx].sum(axis=1), t[idx].sum(axis=1)
    ratios = num[den > 0] / den[den > 0]
    tail = (1.0 - LEVEL) / 2 * 100
    lo, hi = np.percentile(ratios, [tail, 100 - tail])
    return {"value": round(float(s.sum() / t.sum()), 4), "ci95": [round(float(lo), 4), round(float(hi), 4)],
            "paired": True}


def retention(student: Sequence[float] | None, teacher: Sequence[float] | None,
              student_value: float | None = None, teacher_value: float | None = None) -> dict | None:
    """The paired ratio when both per-example lists are there and aligned; else the point ratio of
    the two means (no interval); None when there is nothing to divide."""
    if student and teacher and len(student) == len(teacher):
        paired = paired_ratio(student, teacher)
        if paired is not None:
            return paired
    if student_value is None or not teacher_value:
        return None
    return {"value": round(student_value / teacher_value, 4), "ci95": None, "paired": False}
