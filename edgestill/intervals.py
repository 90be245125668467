"""Bootstrap confidence intervals for scores averaged over a small eval split.

The default recipe scores its student on 24 held-out inputs, so a mean ROUGE-L moves by a few
points with the choice of inputs. These functions say how much: a percentile bootstrap over the
examples (resampled with replacement, seeded, so a report is reproducible), and a *paired*
bootstrap for the gain of one model over another on the same examples, which is far tighter
than comparing two separate intervals because both models meet the same hard and easy inputs.

A percentile interval from a few dozen examples is a little too narrow (it misses the true mean
somewhat more often than 5% of the time); read a verdict near the edge as "borderline".

Means may be weighted: token agreement is `sum(hits) / sum(tokens)` over examples, i.e. the
mean of per-example rates weighted by each example's answer tokens, resampled as a ratio.

    interval([0.2, 0.5, 0.4])                        -> [lo, hi], the 95% interval of the mean
    paired_gain(student, baseline)                   -> {"gain", "ci95", "share_above_zero"}
    verdict(paired_gain(student, baseline))          -> "above" | "below" | "not distinguishable from"

Plain numpy, no model code; used by distill/evaluate.py and the benchmarks' notes.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95


def _arrays(values: Sequence[float], weights: Sequence[float] | None) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(values, dtype=np.float64)
    w = np.ones_like(v) if weights is None else np.asarray(weights, dtype=np.float64)
    if v.ndim != 1 or v.size == 0 or w.shape != v.shape:
        raise ValueError("need a non-empty 1-D list of values and, if given, as many weights")
    if np.any(w < 0) or w.sum() <= 0:
        raise ValueError("weights must be >= 0 with a positive sum")
    return v, w


def _indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) example indices drawn with replacement."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _means(v: np.ndarray, w: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Weighted mean of each resample; a resample whose weights are all 0 counts as the full mean."""
    num, den = (v * w)[idx].sum(axis=1), w[idx].sum(axis=1)
    full = float((v * w).sum() / w.sum())
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), full)


def _bounds(samples: np.ndarray, level: float) -> list[float]:
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(samples, [tail, 100 - tail])
    return [round(float(lo), 4) + 0.0, round(float(hi), 4) + 0.0]  # + 0.0: no "-0.0000" in reports


def interval(values: Sequence[float], weights: Sequence[float] | None = None, level: float = LEVEL,
             resamples: int = RESAMPLES, seed: int = 0) -> list[float]:
    """[lo, hi]: percentile bootstrap interval of the (weighted) mean of `values`."""
    v, w = _arrays(values, weights)
    return _bounds(_means(v, w, _indices(v.size, resamples, seed)), level)


def paired_gain(a: Sequence[float], b: Sequence[float], weights: Sequence[float] | None = None,
                resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """Gain of `a` over `b`, scored on the same examples: mean(a) - mean(b) (weighted), its paired
    95% bootstrap interval `ci95`, and the share of resamples in which `a` comes out ahead."""
    va, w = _arrays(a, weights)
    vb, _ = _arrays(b, weights)
    if va.shape != vb.shape:
        raise ValueError(f"paired scores need the same examples: {va.size} against {vb.size}")
    idx = _indices(va.size, resamples, seed)
    diff = _means(va, w, idx) - _means(vb, w, idx)
    gain = float(((va - vb) * w).sum() / w.sum())
    return {"gain": round(gain, 4) + 0.0, "ci95": _bounds(diff, LEVEL),
            "share_above_zero": round(float((diff > 0).mean()), 4)}


def verdict(gain: dict) -> str:
    """Plain words for a `paired_gain`: "above" / "below" when its 95% interval excludes 0."""
    lo, hi = gain["ci95"]
    return "above" if lo > 0 else "below" if hi < 0 else "not distinguishable from"
