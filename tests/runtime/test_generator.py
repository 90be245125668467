"""Generator on the tiny model's bundle: same greedy tokens as transformers, sampling, streaming."""

from __future__ import annotations

import numpy as np
import pytest

from edgestill.runtime import Bundle, Generator, SamplingError
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
    with pytest.raises(SamplingError, match="max_new_tokens=0"):
        gen.stream_ids(ids, 0)  # checked when called, before the first token


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


def test_logits_match_stepwise_decode_through_the_bound_cache(gen):
    """Prefill of n tokens and single-token steps through the shared KV buffers give the same logits."""
    assert gen.model.share_buffer  # the builder's graph: past and present are one bound buffer
    ids = gen.bundle.encode(TEXTS[0])[:12]
    whole = gen.logits(ids)
    cache = gen.model.new_cache(1, len(ids))
    rows = [cache.prefill(0, ids[:1])]
    rows += [cache.step(np.array([token]))[0].copy() for token in ids[1:]]
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


def test_repetition_penalty_matches_transformers(gen, tiny_llama_dir):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    ids = gen.bundle.encode(TEXTS[0])
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=24, do_sample=False, repetition_penalty=1.5, eos_token_id=None,
                             pad_token_id=2)
    want = out[0, len(ids):].tolist()
    got = list(gen.stream_ids(ids, 24, repetition_penalty=1.5, ignore_eos=True))
    assert got == want
    assert got != list(gen.stream_ids(ids, 24, ignore_eos=True))  # the penalty changed something


def test_batch_gives_the_same_answers_as_one_by_one(gen):
    """Prompts of different lengths, decoded as one batch (right-padded mask), equal single runs."""
    texts = [TEXTS[0], "Short.", TEXTS[1] * 3]
    singles = [gen.generate(t, max_new_tokens=20, ignore_eos=True) for t in texts]
    assert gen.generate_batch(texts, max_new_tokens=20, ignore_eos=True) == singles
    rows = [gen.bundle.encode(t) for t in texts]
    assert gen.generate_ids_batch(rows, 12) == [list(gen.stream_ids(r, 12)) for r in rows]
    sampled = dict(temperature=0.9, top_k=40, seed=5, ignore_eos=True)  # each row gets its own seeded rng
    assert gen.generate_batch(texts[:2], max_new_tokens=10, **sampled) == \
        [gen.generate(t, max_new_tokens=10, **sampled) for t in texts[:2]]


def test_batch_stops_rows_independently(gen):
    sampling = dict(temperature=1.0, seed=0, ignore_eos=True)
    full = gen.generate(TEXTS[0], max_new_tokens=24, **sampling)
    stop = full[len(full) // 2: len(full) // 2 + 3]
    got = gen.generate_batch([TEXTS[0], TEXTS[1]], max_new_tokens=24, stop=[stop], **sampling)
    assert got[0] == full[:full.index(stop)]
    other = gen.generate(TEXTS[1], max_new_tokens=24, stop=[stop], **sampling)
    assert got[1] == other


def test_chunked_prefill_equals_one_pass(gen):
    from edgestill.runtime import engine

    ids = (gen.bundle.encode(TEXTS[0]) * 8)[: engine.PREFILL_CHUNK * 2 + 5]
    cache = gen.model.new_cache(1, len(ids))
    np.testing.assert_allclose(cache.prefill(0, ids), gen.logits(ids)[-1], atol=1e-4)


def test_context_policy_errors_or_truncates_left(gen):
    from edgestill.runtime import ContextLengthError

    ids = list(range(100, 100 + gen.context_length - 3))
    with pytest.raises(ContextLengthError, match=r"exceeds the context of \d+ tokens.*truncate='left'"):
        gen.stream_ids(ids, 8)
    assert gen.check_ids(ids, 8, truncate="left") == ids[-(gen.context_length - 8):]
    kept = ids[-(gen.context_length - 4):]
    assert list(gen.stream_ids(ids, 4, truncate="left", ignore_eos=True)) == \
        list(gen.stream_ids(kept, 4, ignore_eos=True))


def test_refeed_fallback_gives_the_same_answers(fp32_bundle, gen):
    """Graphs without a shared past/present buffer use the OrtValue re-feed path: same greedy ids."""
    other = Generator(Bundle.open(fp32_bundle, verify=False), threads=1)
    other.model.share_buffer = False
    rows = [gen.bundle.encode(t) for t in TEXTS]
    assert other.generate_ids_batch(rows, 10) == gen.generate_ids_batch(rows, 10)
    np.testing.assert_allclose(other.logits(rows[0]), gen.logits(rows[0]), atol=1e-4)


def test_drafts_follow_the_longest_earlier_match():
    from edgestill.runtime.lookup import Drafts

    drafts = Drafts([5, 1, 2, 9, 7, 1, 2, 8, 5, 1, 2])
    assert drafts.draft(2) == [9, 7]  # the 3-gram 5 1 2 beats the later 2-gram 1 2 (followed by 8)
    drafts.append(8)
    assert drafts.draft(3) == [5, 1, 2]  # 1 2 8 was followed by 5 1 2
    drafts.append(6)
    assert drafts.draft(3) == []  # 8 6 was never seen before
    assert Drafts([3, 4, 3]).draft(2) == []  # one repeated token is not a match
    assert drafts.draft(0) == []


def test_extend_and_rewind_match_one_token_steps(gen):
    ids = gen.bundle.encode(TEXTS[0])
    more = list(gen.stream_ids(ids, 6, ignore_eos=True))
    plain = gen.model.new_cache(1, len(ids) + 8)
    plain.prefill(0, ids)
    want = np.stack([plain.step(np.array([t]))[0].copy() for t in more])
    cache = gen.model.new_cache(1, len(ids) + 8)
    cache.prefill(0, ids)
    np.testing.assert_allclose(cache.extend(more[:4]), want[:4], atol=1e-4)
    cache.rewind(2)  # keep more[:2]; the next run overwrites the rest
    np.testing.assert_allclose(cache.extend(more[2:]), want[2:], atol=1e-4)
    assert int(cache.lengths[0]) == len(ids) + 6 and int(cache.mask[0].sum()) == len(ids) + 6


@pytest.mark.parametrize("penalty, ignore_eos", [(1.0, True), (1.0, False), (1.3, True)])
def test_prompt_lookup_gives_the_greedy_tokens_in_fewer_runs(gen, penalty, ignore_eos):
    from edgestill.runtime.lookup import lookup_steps

    ids = gen.bundle.encode(" ".join(TEXTS) * 2)
    want = list(gen.stream_ids(ids, 40, ignore_eos=ignore_eos, repetition_penalty=penalty))
    assert list(gen.stream_ids(ids, 40, ignore_eos=ignore_eos, repetition_penalty=penalty, prompt_lookup=4)) == want
    from edgestill.runtime.sampling import Sampling

    cache, stats = gen.model.new_cache(1, len(ids) + 40), {}
    choose = gen._chooser(Sampling(repetition_penalty=penalty).checked(gen.vocab_size), ids)
    eos = frozenset() if ignore_eos else gen.eos
    assert list(lookup_steps(cache, choose, ids, 40, 4, eos, stats)) == want
    # each run gives its accepted drafts and one more token (not yielded when it is eos)
    assert stats["accepted"] > 0 and stats["runs"] + stats["accepted"] in (len(want) - 1, len(want))


def test_prompt_lookup_edges_match_plain_decoding(gen):
    """Tiny budgets, a one-token prompt, stop strings and streaming text agree with plain decoding;
    a cache refuses to extend past its capacity."""
    ids = gen.bundle.encode(" ".join(TEXTS) * 2)
    for n in (1, 2, 3):
        assert list(gen.stream_ids(ids, n, ignore_eos=True, prompt_lookup=3)) == list(gen.stream_ids(ids, n, ignore_eos=True))
    assert list(gen.stream_ids(ids[:1], 6, ignore_eos=True, prompt_lookup=3)) == list(gen.stream_ids(ids[:1], 6, ignore_eos=True))
    text = " ".join(TEXTS) * 2
    full = gen.generate(text, max_new_tokens=30, ignore_eos=True)
    stop = full[len(full) // 2:len(full) // 2 + 3]
    assert gen.generate(text, max_new_tokens=30, ignore_eos=True, stop=[stop], prompt_lookup=3) == full[:full.index(stop)]
    assert "".join(gen.stream(text, max_new_tokens=30, ignore_eos=True, prompt_lookup=3)) == full
    cache = gen.model.new_cache(1, len(ids) + 2)
    cache.prefill(0, ids)
    with pytest.raises(IndexError, match="room for 3 more tokens"):
        cache.extend([1, 2, 3])


def test_copy_bias_favours_the_input_tokens(gen, fp32_bundle, tmp_path):
    """A large copy bias keeps every answer token among the input's own tokens; none leaves the
    answer as it was; the bundle's manifest value is the default."""
    import json
    import shutil

    text = TEXTS[0]
    favoured = set(gen.copy_ids(text))
    plain = list(gen.stream_ids(gen.encode(text), 16, ignore_eos=True))
    assert list(gen.stream_ids(gen.encode(text), 16, ignore_eos=True, copy_bias=0.0)) == plain
    biased = list(gen.stream_ids(gen.encode(text), 16, ignore_eos=True, copy_bias=20.0, copy_ids=gen.copy_ids(text)))
    assert set(biased) <= favoured and not set(plain) <= favoured  # the bias changed the choice
    assert gen.generate(text, max_new_tokens=16, ignore_eos=True, copy_bias=20.0) == gen.bundle.tokenizer.decode(biased)
    # a bundle whose manifest carries task.copy_bias uses it unless told otherwise
    folder = tmp_path / "bundle"
    shutil.copytree(fp32_bundle, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["task"] = {"copy_bias": 20.0}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    biased_bundle = Generator(Bundle.open(folder), threads=2)
    assert biased_bundle.bundle.copy_bias == 20.0
    ids = gen.encode(text)  # the token level stays plain unless asked (export validation compares it)
    assert list(biased_bundle.stream_ids(ids, 16, ignore_eos=True)) == plain
    answer = biased_bundle.generate(text, max_new_tokens=16, ignore_eos=True)
    assert answer == gen.generate(text, max_new_tokens=16, ignore_eos=True, copy_bias=20.0)
    assert biased_bundle.generate(text, max_new_tokens=16, ignore_eos=True, copy_bias=0.0) == \
        gen.generate(text, max_new_tokens=16, ignore_eos=True)
    batch = biased_bundle.generate_batch([text, TEXTS[1]], max_new_tokens=16, ignore_eos=True)
    assert batch[0] == answer
