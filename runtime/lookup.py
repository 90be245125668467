"""Prompt-lookup decoding: draft tokens copied from n-grams already in the text, checked in one run.

    gen.generate(text, prompt_lookup=3)          # greedy only; the same tokens up to rounding, fewer runs

Summaries, extraction and rewriting copy much of their answer from the input. After each token,
`Drafts` looks for the last 3 (else 2) tokens earlier in prompt + answer and proposes the up
to `k` tokens that followed them there (a single repeated token predicts too little: 1-token
matches made more drafts and kept fewer). One run of the model over [last token, drafts] gives
the logits after each of them; the answer keeps the drafts while they equal what greedy decoding
picks, plus the pick at the first mismatch, and the KV cache is rewound past the rejected drafts
(they were written beyond the kept length, where the next run overwrites them). Without a match
the step is an ordinary one-token step. The picks run through the same chooser (repetition
penalty included) in the same order as plain decoding, so the tokens are those of plain greedy
decoding, up to float rounding: a run over several tokens may add in another order, which can
flip a near-tie between two logits.

A run over several tokens costs more than a one-token step, so drafting pays where the answer
copies its input (`make lookup-speed`; figures: docs/log.md).
Sampling is not supported (it would need rejection sampling and could not reproduce a seeded run).
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

MIN_NGRAM, MAX_NGRAM = 2, 3
MAX_DRAFT = 32


class Drafts:
    """An index of the n-grams (n = MIN_NGRAM..MAX_NGRAM) of a growing token sequence: where each
    one was last followed by a token, so a draft is a dictionary lookup, not a scan."""

    def __init__(self, tokens: list[int]):
        self.seq: list[int] = []
        self.after: list[dict[tuple, int]] = [{} for _ in range(MAX_NGRAM + 1)]
        for token in tokens:
            self.append(token)

    def append(self, token: int) -> None:
        j = len(self.seq)
        for n in range(MIN_NGRAM, min(MAX_NGRAM, j) + 1):
            self.after[n][tuple(self.seq[j - n:j])] = j  # that n-gram was (last) followed by position j
        self.seq.append(token)

    def draft(self, k: int) -> list[int]:
        """Up to `k` tokens that followed the longest earlier match of the sequence's tail."""
        if k <= 0:
            return []
        for n in range(min(MAX_NGRAM, len(self.seq)), MIN_NGRAM - 1, -1):
            start = self.after[n].get(tuple(self.seq[-n:]))
            if start is not None:
                return self.seq[start:start + k]
        return []


def lookup_steps(cache, choose: Callable[[np.ndarray], int], ids: list[int], max_new: int, k: int,
                 eos: frozenset, stats: dict | None = None) -> Iterator[int]:
    """Yield up to `max_new` greedy token ids after the prompt `ids` (stopping before an id in
    `eos`), drafting up to `k` tokens a run. `cache` is an empty runtime.engine.KVCache of one row
    with room for len(ids) + max_new tokens; `choose` picks a token from a logits row. `stats`, if
    given, counts the model runs after prefill and the tokens drafted and accepted."""
    stats = {} if stats is None else stats
    for key in ("runs", "drafted", "accepted"):
        stats.setdefault(key, 0)
    drafts = Drafts(ids)
    token, made = choose(cache.prefill(0, ids)), 0
    while token not in eos:
        yield token
        made += 1
        drafts.append(token)
        if made == max_new:
            return
        draft = drafts.draft(min(k, max_new - made - 1))
        stats["runs"] += 1
        stats["drafted"] += len(draft)
        if not draft:
            token = choose(cache.step(np.array([token]))[0])
            continue
        rows = cache.extend([token, *draft])
        for i, row in enumerate(rows):
            token = choose(row)
            if i == len(draft) or token != draft[i] or token in eos:
                break
            yield token
            made += 1
            drafts.append(token)
            stats["accepted"] += 1
        cache.rewind(len(draft) - i)
