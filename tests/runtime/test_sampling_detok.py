"""Sampling filters and incremental detokenisation, without a model."""

from __future__ import annotations

import numpy as np
import pytest
from tokenizers import Tokenizer

from edgestill.runtime.detok import StopFilter, TextStream
from edgestill.runtime.sampling import keep_top_k, keep_top_p, pick


def test_greedy_and_filters():
    logits = np.array([0.0, 3.0, 1.0, 2.0], dtype=np.float32)
    assert pick(logits) == 1 and pick(logits, temperature=5.0, top_k=1) == 1
    probs = np.array([0.1, 0.5, 0.15, 0.25])
    assert np.count_nonzero(keep_top_k(probs, 2)) == 2 and keep_top_k(probs, 2)[1] == 0.5
    assert set(np.flatnonzero(keep_top_p(probs, 0.7))) == {1, 3}  # 0.5 + 0.25 reaches 0.7
    assert set(np.flatnonzero(keep_top_p(probs, 0.5))) == {1}


def test_sampling_follows_the_distribution():
    rng = np.random.default_rng(0)
    logits = np.log(np.array([0.7, 0.2, 0.1]))
    counts = np.bincount([pick(logits, 1.0, rng=rng) for _ in range(2000)], minlength=3) / 2000
    np.testing.assert_allclose(counts, [0.7, 0.2, 0.1], atol=0.04)


@pytest.fixture(scope="module")
def tokenizer(teacher_dir):
    return Tokenizer.from_file(str(teacher_dir / "tokenizer.json"))


def test_text_stream_never_breaks_characters_or_spaces(tokenizer):
    text = "Café “quoted” — 東京 in 2024 😀 ok  two  spaces\nnew line"
    stream, pieces = TextStream(tokenizer), []
    for token in tokenizer.encode(text, add_special_tokens=False).ids:
        pieces.append(stream.push(token))
    pieces.append(stream.flush())
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)


def test_stop_filter_holds_back_partial_stop_strings():
    f = StopFilter(["\n\n", "END"])
    out = [f.push("Hello EN"), f.push("d of it E"), f.push("N"), f.push("D more")]
    assert "".join(out) == "Hello ENd of it " and f.stopped
    g = StopFilter(["###"])
    assert g.push("a#") == "a" and g.push("b") == "#b" and g.flush() == ""
