"""Bad input to the Generator: a specific RuntimeFailure subclass with a useful message, never a crash.

A property-based test (hypothesis) throws arbitrary text and settings at `generate`: the result
is either text or an `InputError`, and the Generator keeps working afterwards.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgestill.runtime import (
    Bundle,
    ContextLengthError,
    EncodingError,
    Generator,
    InputError,
    PromptError,
    RuntimeFailure,
    SamplingError,
)
from edgestill.runtime.sampling import (
    MAX_REPETITION_PENALTY,
    MAX_TEMPERATURE,
    MIN_REPETITION_PENALTY,
)


@pytest.fixture(scope="module")
def gen(fp32_bundle):
    return Generator(Bundle.open(fp32_bundle, verify=False), threads=1)


@pytest.mark.parametrize("prompt, error, message", [
    ("", PromptError, "empty"),
    ("  \n\t", PromptError, "empty"),
    (None, PromptError, "must be str"),
    ("bad \ud800 surrogate", EncodingError, "lone surrogate at index 4"),
    (b"bad \xff\xfe bytes", EncodingError, "not valid UTF-8.*offset 4"),
    ("word " * 3000, ContextLengthError, "exceeds the context"),
])
def test_bad_prompts(gen, prompt, error, message):
    with pytest.raises(error, match=message):
        gen.generate(prompt, max_new_tokens=4)
    assert issubclass(error, InputError) and issubclass(error, ValueError) and issubclass(error, RuntimeFailure)


def test_utf8_bytes_are_accepted(gen):
    assert gen.generate("Café".encode(), max_new_tokens=2, ignore_eos=True) == gen.generate("Café", max_new_tokens=2,
                                                                                            ignore_eos=True)


@pytest.mark.parametrize("setting, value, message", [
    ("max_new_tokens", 0, "max_new_tokens=0"),
    ("max_new_tokens", 10**9, "max_new_tokens=1000000000: use an integer from 1 to"),
    ("max_new_tokens", -3, "max_new_tokens=-3"),
    ("max_new_tokens", 2.5, "max_new_tokens=2.5"),
    ("temperature", -0.5, "temperature=-0.5 is out of range"),
    ("temperature", float("nan"), "temperature=nan"),
    ("temperature", 1e6, "temperature=1000000.0 is out of range"),
    ("temperature", "hot", "temperature must be a number"),
    ("top_k", -1, "top_k=-1 is out of range"),
    ("top_k", 10**12, "top_k=1000000000000 is out of range"),
    ("top_k", 2.0, "top_k must be an integer"),
    ("top_p", 0.0, "top_p=0.0 is out of range"),
    ("top_p", 1.5, "top_p=1.5 is out of range"),
    ("repetition_penalty", 0.0, "repetition_penalty=0.0"),
    ("repetition_penalty", 1e-300, "repetition_penalty=1e-300 is out of range"),
    ("repetition_penalty", float("inf"), "repetition_penalty=inf"),
    ("seed", -1, "seed=-1 is out of range"),
    ("copy_bias", -1.0, "copy_bias=-1.0 is out of range"),
    ("copy_bias", "much", "copy_bias must be a number"),
    ("truncate", "right", "truncate='right'"),
    ("prompt_lookup", -1, "prompt_lookup=-1: use an integer from 0"),
    ("prompt_lookup", 33, "prompt_lookup=33"),
    ("prompt_lookup", 2.5, "prompt_lookup=2.5"),
    ("prompt_lookup", True, "prompt_lookup=True"),
])
def test_bad_settings(gen, setting, value, message):
    with pytest.raises(SamplingError, match=message):
        gen.generate("A paragraph.", **{"max_new_tokens": 4, setting: value})


def test_bad_generator_settings(fp32_bundle):
    bundle = Bundle.open(fp32_bundle, verify=False)
    with pytest.raises(InputError, match=r"providers \['NoSuchExecutionProvider'\] are not in this onnxruntime"):
        Generator(bundle, providers=["NoSuchExecutionProvider"])
    with pytest.raises(SamplingError, match="threads=-2"):
        Generator(bundle, threads=-2)


def test_bad_token_ids_and_stop_strings(gen):
    with pytest.raises(PromptError, match="no tokens"):
        gen.stream_ids([], 4)
    with pytest.raises(PromptError, match="token ids must be in"):
        gen.stream_ids([gen.vocab_size + 5], 4)
    with pytest.raises(EncodingError, match="stop string"):
        gen.generate("A paragraph.", stop=["\udfff"])
    with pytest.raises(PromptError):
        gen.generate_batch([], max_new_tokens=2)


def test_prompt_lookup_refuses_sampling_and_batches(gen):
    with pytest.raises(SamplingError, match="prompt_lookup checks drafts against greedy picks; use temperature=0"):
        gen.generate("A paragraph.", max_new_tokens=4, temperature=0.7, prompt_lookup=4)
    with pytest.raises(SamplingError, match="prompt_lookup drafts for one prompt at a time"):
        gen.generate_batch(["A paragraph.", "Another."], max_new_tokens=4, prompt_lookup=4)


def _lookup_ok(lookup, temperature, top_k) -> bool:
    """prompt_lookup is 0, or 1..32 with greedy decoding (temperature 0 or top_k 1)."""
    return lookup == 0 or (1 <= lookup <= 32 and (temperature == 0 or top_k == 1))


def _valid(temperature, top_k, top_p, penalty, max_new) -> bool:
    return (math.isfinite(temperature) and 0 <= temperature <= MAX_TEMPERATURE and 0 <= top_k <= 49152
            and 0 < top_p <= 1 and MIN_REPETITION_PENALTY <= penalty <= MAX_REPETITION_PENALTY and 1 <= max_new)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.text(max_size=40), st.binary(max_size=20)),
       temperature=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(0, 3)),
       top_k=st.integers(-3, 60000), top_p=st.one_of(st.floats(-1, 2), st.just(1.0)),
       penalty=st.one_of(st.floats(-1, 3), st.just(1.0)), max_new=st.integers(-2, 4),
       seed=st.one_of(st.none(), st.integers(0, 2**32)), lookup=st.one_of(st.just(0), st.integers(-2, 40)))
def test_any_input_gives_text_or_an_input_error(gen, text, temperature, top_k, top_p, penalty, max_new, seed,
                                                lookup):
    try:
        out = gen.generate(text, max_new_tokens=max_new, temperature=temperature, top_k=top_k, top_p=top_p,
                           repetition_penalty=penalty, seed=seed, prompt_lookup=lookup)
    except InputError:
        valid = _valid(temperature, top_k, top_p, penalty, max_new) and _lookup_ok(lookup, temperature, top_k)
        try:
            decoded = text.decode() if isinstance(text, bytes) else text
            usable = decoded.strip() != "" and bool(decoded.encode() or True)  # encode() fails on surrogates
        except UnicodeError:
            usable = False
        assert not (valid and usable), (text, temperature, top_k, top_p, penalty, max_new)
        return
    assert isinstance(out, str)
    out.encode("utf-8")  # valid Unicode: no lone surrogates from split characters
    assert _valid(temperature, top_k, top_p, penalty, max_new) and _lookup_ok(lookup, temperature, top_k)
