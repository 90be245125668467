"""Generator on the tiny model's bundle: same greedy tokens as transformers, sampling, streaming."""

from __future__ import annotations

import numpy as np
import pytest

from runtime import Bundle, Generator
from tests.export.tiny_bundles import TEXTS


@pytest.fixture(scope="module")
def gen(fp32_bundle):
    return Generator(Bundle.open(fp32_bundle), threads=2)


def test_greedy_matches_transformers_generate(gen, tiny_llama_dir):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    for text in TEXTS:
        ids = gen.bundle.encode(text)
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 max_new_tokens=32, do_sample=False, eos_token_id=gen.bundle.eos_token_ids,
                                 pad_token_id=2)
        want = out[0, len(ids):].tolist()
        want = want[:want.index(2)] if 2 in want else want
        assert list(gen.stream_ids(ids, 32)) == want


def test_stream_ids_counts_and_eos(gen):
    ids = gen.bundle.encode(TEXTS[0])
    assert len(list(gen.stream_ids(ids, 7, ignore_eos=True))) == 7
    assert list(gen.stream_ids(ids, 0)) == []


def test_seeded_sampling_is_reproducible_and_top_k_1_is_greedy(gen):
    ids = gen.bundle.encode(TEXTS[1])
    a = list(gen.stream_ids(ids, 16, temperature=1.0, top_p=0.95, seed=1, ignore_eos=True))
    b = list(gen.stream_ids(ids, 16, temperature=1.0, top_p=0.95, seed=1, ignore_eos=True))
    c = list(gen.stream_ids(ids, 16, temperature=1.0, top_p=0.95, seed=2, ignore_eos=True))
    assert a == b and a != c
    greedy = list(gen.stream_ids(ids, 16, ignore_eos=True))
    assert list(gen.stream_ids(ids, 16, temperature=0.8, top_k=1, seed=3, ignore_eos=True)) == greedy


def test_stream_pieces_join_to_decoded_text(gen):
    ids = gen.bundle.encode(TEXTS[1])
    tokens = list(gen.stream_ids(ids, 24))
    pieces = list(gen.stream(TEXTS[1], max_new_tokens=24))
    assert "".join(pieces) == gen.bundle.tokenizer.decode(tokens, skip_special_tokens=True)
    assert gen.generate(TEXTS[1], max_new_tokens=24) == "".join(pieces)


def test_stop_string_cuts_output(gen):
    sampling = dict(temperature=1.0, seed=0, ignore_eos=True)  # varied text from the random model
    full = gen.generate(TEXTS[0], max_new_tokens=32, **sampling)
    stop = full[len(full) // 2: len(full) // 2 + 3]
    assert len(stop) == 3 and stop.strip(), full
    cut = gen.generate(TEXTS[0], max_new_tokens=32, stop=["never-there", stop], **sampling)
    assert cut == full[:full.index(stop)]


def test_logits_match_stepwise_decode(gen):
    """Prefill of n tokens and n single-token steps through the cache give the same logits."""
    ids = gen.bundle.encode(TEXTS[0])[:12]
    whole = gen.logits(ids)
    past, rows = gen.empty_past(), []
    for i, token in enumerate(ids):
        logits, past = gen.forward([token], past, i)
        rows.append(logits[0])
    np.testing.assert_allclose(np.stack(rows), whole, atol=1e-4)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_onnxruntime_genai_runs_the_bundle_unchanged(precision, request):
    import onnxruntime_genai as og

    folder = request.getfixturevalue(f"{precision}_bundle")
    gen = Generator(Bundle.open(folder), threads=2)
    ids = gen.bundle.encode(TEXTS[0])
    model = og.Model(str(folder))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + 8, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    got = []
    while not generator.is_done() and len(got) < 8:
        generator.generate_next_token()
        got.append(int(generator.get_next_tokens()[0]))
    got = [t for t in got if t not in gen.bundle.eos_token_ids]  # genai also returns the eos id
    assert got == list(gen.stream_ids(ids, 8))[:len(got)] and got
