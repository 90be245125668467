"""Constrained answers (runtime/choices.py): one prefill + a few tokens per choice, the same
log-likelihoods as scoring each whole sequence in one pass, and only ever one of the choices."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edgestill.runtime import Bundle, Generator, PromptError
from edgestill.runtime.choices import sequence_logp

TEXT = "The battery died after one day and support never answered."
CHOICES = ["positive", "negative", "not sure at all"]


@pytest.fixture(scope="module")
def gen(fp32_bundle):
    return Generator(Bundle.open(fp32_bundle), threads=1)


def full_pass_logp(gen: Generator, text: str, choice: str) -> float:
    prompt = gen.encode(text)
    ids = gen.bundle.tokenizer.encode(choice, add_special_tokens=False).ids + gen.bundle.eos_token_ids[:1]
    logits = gen.logits(prompt + ids[:-1])
    rows = logits[len(prompt) - 1:].astype(np.float64)
    rows -= rows.max(-1, keepdims=True)
    logp = rows - np.log(np.exp(rows).sum(-1, keepdims=True))
    return float(logp[np.arange(len(ids)), ids].sum())


def test_scores_match_one_pass_over_prompt_and_choice(gen):
    found = gen.choose(TEXT, CHOICES)
    for choice in CHOICES:
        assert found.scores[choice] == pytest.approx(full_pass_logp(gen, TEXT, choice), abs=1e-3)
    assert found.text == max(CHOICES, key=found.scores.get)


def test_the_answer_is_always_one_of_the_choices(gen):
    for text in ("Great.", "Terrible value, broke at once.", "ok " * 30):
        assert gen.choose(text, ["yes", "no"]).text in ("yes", "no")


def test_sequence_logp_golden():
    first = np.log(np.array([0.5, 0.25, 0.25]))
    rest = np.log(np.array([[0.1, 0.8, 0.1]]))
    assert sequence_logp(first, rest, [0, 1]) == pytest.approx(np.log(0.5) + np.log(0.8))
    assert sequence_logp(first, rest[:0], [2]) == pytest.approx(np.log(0.25))


@pytest.mark.parametrize("choices", [[], ["only"], ["a", "a"], ["a", ""], "ab", ["a", 3]])
def test_bad_choices_are_refused(gen, choices):
    with pytest.raises(PromptError, match="choice"):
        gen.choose(TEXT, choices)


def test_a_bundle_without_labels_needs_choices(gen):
    assert gen.bundle.labels is None
    with pytest.raises(PromptError, match="no task labels"):
        gen.choose(TEXT)


def test_cli_prints_the_choice(fp32_bundle):
    done = subprocess.run([sys.executable, "-m", "edgestill.runtime", "generate", str(fp32_bundle), "--prompt", TEXT,
                           "--choice", "positive", "--choice", "negative", "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["text"] in ("positive", "negative") and set(out["scores"]) == {"positive", "negative"}
    bad = subprocess.run([sys.executable, "-m", "edgestill.runtime", "generate", str(fp32_bundle), "--prompt", TEXT,
                          "--labels"], capture_output=True, text=True)
    assert bad.returncode == 2 and "no task labels" in bad.stderr and "Traceback" not in bad.stderr
