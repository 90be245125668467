"""Four threads generating at once (shared Generator, and one Generator each) give the sequential answers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from edgestill.runtime import Bundle, Generator
from tests.export.tiny_bundles import TEXTS

PROMPTS = [TEXTS[0], TEXTS[1], "A third, shorter paragraph.", TEXTS[0] + " " + TEXTS[1]]


@pytest.fixture(scope="module")
def bundle(fp32_bundle):
    return Bundle.open(fp32_bundle, verify=False)


def test_four_threads_share_one_generator(bundle):
    gen = Generator(bundle, threads=1)
    want = [gen.generate(p, max_new_tokens=24, ignore_eos=True) for p in PROMPTS]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):  # several rounds so the threads really overlap
            got = list(pool.map(lambda p: gen.generate(p, max_new_tokens=24, ignore_eos=True), PROMPTS))
            assert got == want


def test_four_threads_one_generator_each(bundle):
    gens = [Generator(bundle, threads=1) for _ in PROMPTS]
    want = [list(gens[0].stream_ids(bundle.encode(p), 24)) for p in PROMPTS]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda gp: list(gp[0].stream_ids(bundle.encode(gp[1]), 24)), zip(gens, PROMPTS)))
    assert got == want
