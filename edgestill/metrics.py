"""Text-agreement metrics shared by distill (eval vs teacher) and benchmarks (bundle quality), and
the share of a free-text answer's words that neither the input nor the reference holds.

ROUGE-L F1 on lower-cased word tokens, written here (about 20 lines) rather than pulling in
`rouge-score`, which brings nltk and absl for the same number. Exact match compares the same
word tokens, so "Positive." matches "positive" (as SQuAD-style exact match normalises case,
punctuation and spacing; articles are kept, since they are words the student must get right).
"""

from __future__ import annotations

import re
from typing import Sequence

_WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters/digits/underscore runs)."""
    return _WORD.findall(text.lower())


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists (O(len(a) * len(b)))."""
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 between two texts, in [0, 1]; two empty texts score 1."""
    p, r = words(prediction), words(reference)
    if not p and not r:
        return 1.0
    lcs = lcs_length(p, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, reference: str) -> bool:
    """Whether two texts have the same lower-cased word tokens (case, punctuation and spacing ignored)."""
    return words(prediction) == words(reference)


def exact_match_rate(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Share of aligned pairs that match exactly (see `exact_match`)."""
    _check_aligned(predictions, references)
    return sum(map(exact_match, predictions, references)) / len(predictions)


def mean_rouge_l(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F1 over aligned pairs."""
    _check_aligned(predictions, references)
    return sum(rouge_l(p, r) for p, r in zip(predictions, references)) / len(predictions)


def _check_aligned(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references) or not predictions:
        raise ValueError("need the same, non-zero number of predictions and references")


def novel_word_share(prediction: str, source: str, reference: str) -> float:
    """The share of `prediction`'s words found in neither `source` (the input) nor `reference`:
    words a summary brings from nowhere, invented content and broken word pieces alike (0 for an
    empty prediction)."""
    said = words(prediction)
    if not said:
        return 0.0
    known = set(words(source)) | set(words(reference))
    return sum(w not in known for w in said) / len(said)
