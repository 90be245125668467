"""Fixtures of the distill tests: the tiny random model as a greedy answerer."""

import pytest


@pytest.fixture(scope="session")
def tiny(tiny_llama_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tok = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval(), AutoTokenizer.from_pretrained(tiny_llama_dir)
    # a random model answers only newlines and special tokens: with those suppressed, it answers words
    blank = [i for piece, i in tok.get_vocab().items() if not piece.strip("\u0120\u010a\u0109")]  # Ġ Ċ ĉ
    model.generation_config.suppress_tokens = tok.all_special_ids + blank
    return model, tok
