"""edgestill.metrics: ROUGE-L F1 and exact match on lower-cased word tokens (golden values)."""

import pytest

from edgestill.metrics import (
    exact_match,
    exact_match_rate,
    lcs_length,
    mean_rouge_l,
    novel_word_share,
    rouge_l,
    words,
)


def test_words_lowercase_and_drop_punctuation():
    assert words("Positive.  The CAT's mat!") == ["positive", "the", "cat", "s", "mat"]


def test_lcs_length_golden():
    assert lcs_length("a b c d".split(), "a c d e".split()) == 3
    assert lcs_length([], ["a"]) == 0


def test_rouge_l_golden():
    # LCS "the cat on mat" = 4 of 6 and 5 words: P 4/6, R 4/5 -> F1 = 8/11
    assert rouge_l("the cat sat on the mat", "The cat is on mat.") == pytest.approx(8 / 11)
    assert rouge_l("", "") == 1.0
    assert rouge_l("x", "") == 0.0
    assert mean_rouge_l(["a", "b"], ["a", "c"]) == 0.5


def test_exact_match_ignores_case_punctuation_and_spacing_only():
    assert exact_match("Positive.", " positive\n")
    assert exact_match("New  York, USA", "new york usa")
    assert not exact_match("positive", "negative")
    assert not exact_match("the answer", "answer")  # words are compared, articles included
    assert exact_match_rate(["Positive", "negative", "x"], ["positive!", "positive", "x"]) == pytest.approx(2 / 3)


def test_rates_refuse_misaligned_or_empty_lists():
    with pytest.raises(ValueError):
        exact_match_rate([], [])
    with pytest.raises(ValueError):
        mean_rouge_l(["a"], ["a", "b"])


def test_novel_word_share_counts_words_from_nowhere():
    source = "Storms cancelled the ferry crossings to the island on Tuesday."
    reference = "Ferries to the island were cancelled."
    assert novel_word_share("The island ferry crossings were cancelled.", source, reference) == 0.0
    invented = "A ferry is a powerful tool for better clarity."  # 'a' x2, is, powerful, tool, for, better, clarity
    assert novel_word_share(invented, source, reference) == pytest.approx(8 / 9)
    assert novel_word_share("The ferr cross cancelled", source, reference) == pytest.approx(2 / 4)  # broken words
    assert novel_word_share("", source, reference) == 0.0
