"""Scores of a label task against ground truth: accuracy and macro-F1, each with a 95% interval.

    label_scores(predictions, golds, labels) -> {"accuracy", "accuracy_ci95", "macro_f1",
                                                  "macro_f1_ci95", "n", "majority_accuracy"}

Macro-F1 is the mean over the labels of each label's F1 (a label never predicted nor present
scores 0 and is left out of the mean), so a model that answers the majority label everywhere
scores well on accuracy but not on macro-F1. Intervals are percentile bootstraps over the
examples (edgestill/intervals.py's resampling: seeded, reproducible). Plain numpy.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np

from edgestill.intervals import LEVEL, RESAMPLES, interval


def macro_f1(predictions: Sequence[str], golds: Sequence[str], labels: Sequence[str]) -> float:
    """Mean F1 over the labels that occur in `golds` or `predictions`."""
    if len(predictions) != len(golds) or not golds:
        raise ValueError(f"need as many predictions as gold labels (got {len(predictions)} and {len(golds)})")
    f1s = []
    for label in labels:
        tp = sum(p == label and g == label for p, g in zip(predictions, golds))
        fp = sum(p == label and g != label for p, g in zip(predictions, golds))
        fn = sum(p != label and g == label for p, g in zip(predictions, golds))
        if tp + fp + fn:
            f1s.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s)) if f1s else 0.0


def _macro_f1_interval(predictions: list[str], golds: list[str], labels: Sequence[str],
                       resamples: int = RESAMPLES, seed: int = 0) -> list[float]:
    idx = np.random.default_rng(seed).integers(0, len(golds), size=(resamples, len(golds)))
    samples = [macro_f1([predictions[i] for i in row], [golds[i] for i in row], labels) for row in idx]
    tail = (1.0 - LEVEL) / 2 * 100
    lo, hi = np.percentile(samples, [tail, 100 - tail])
    return [round(float(lo), 4) + 0.0, round(float(hi), 4) + 0.0]


def label_scores(predictions: Sequence[str], golds: Sequence[str], labels: Sequence[str]) -> dict:
    """Accuracy and macro-F1 of `predictions` against `golds`, with 95% intervals, and the accuracy of
    always answering the most frequent gold label (the trivial baseline)."""
    predictions, golds = list(predictions), list(golds)
    correct = [float(p == g) for p, g in zip(predictions, golds, strict=True)]
    majority = Counter(golds).most_common(1)[0][1] / len(golds)
    return {"n": len(golds), "accuracy": round(float(np.mean(correct)), 4), "accuracy_ci95": interval(correct),
            "macro_f1": round(macro_f1(predictions, golds, labels), 4),
            "macro_f1_ci95": _macro_f1_interval(predictions, golds, labels),
            "majority_accuracy": round(majority, 4)}
