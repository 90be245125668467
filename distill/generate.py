"""Batched generation on the local torch teacher, with the prompts' shared prefix computed once.

    texts = sample(model, tokenizer, prompts, max_new_tokens, seed)          # inputs (sampling)
    answers = greedy_topk(model, tokenizer, prompts, max_new_tokens, k, eos)  # answers + top-k

Why not `model.generate`: the prompts of one batch share a long prefix (chat system prompt,
task, few-shot examples), and rows finish at different lengths. Here the longest common token
prefix is run once at batch 1 and its KV cache repeated for every row; the rest of each prompt
is run with padding *between* prefix and suffix (mask 0, explicit position ids), so every row
sees exactly its own prompt; a finished row is dropped from the batch (and its KV cache) at
once.

The KV cache is transformers' DynamicCache with its layers swapped for `BufferedLayer`s, which
write into preallocated buffers instead of concatenating, and finished rows leave the batch in
groups (`COMPACT_SHARE`). Timings against `model.generate`: docs/log.md.
"""

from __future__ import annotations

import functools

import torch

from edgestill.distill.copy_bias import add_copy_bias

TEMPERATURE, TOP_P, TOP_K = 0.9, 0.95, 50
COMPACT_SHARE = 0.25  # see decode()


def common_prefix_len(rows: list[list[int]]) -> int:
    """Length of the longest token prefix shared by every row (at most shortest row - 1)."""
    n = min(len(r) for r in rows) - 1
    first = rows[0]
    for i in range(n):
        if any(r[i] != first[i] for r in rows[1:]):
            return i
    return max(n, 0)


def buffered_cache(model, capacity: int):
    """A DynamicCache whose full-attention layers write into preallocated buffers (see BufferedLayer)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache(config=model.config)
    layer_class = _buffered_layer_class()
    cache.layers = [layer_class(capacity) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


@functools.lru_cache(maxsize=None)
def _buffered_layer_class():
    from transformers.cache_utils import DynamicLayer

    class BufferedLayer(DynamicLayer):
        """transformers' DynamicLayer concatenates each step's key/value onto the whole cache, a copy
        of the cache per token per layer (18% of a batch-64 input-writing run in torch.cat, measured).
        This layer writes each step into a buffer of `capacity` positions (doubled when full) and
        hands attention a view of the filled part."""

        def __init__(self, capacity: int):
            super().__init__()
            self.capacity, self.length = capacity, 0

        def lazy_initialization(self, key_states, value_states) -> None:
            super().lazy_initialization(key_states, value_states)
            b, h, _, d = key_states.shape
            self._k = key_states.new_empty((b, h, self.capacity, d))
            self._v = value_states.new_empty((b, h, self.capacity, value_states.shape[-1]))
            self.length = 0

        def _views(self) -> None:
            self.keys, self.values = self._k[:, :, :self.length], self._v[:, :, :self.length]

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            end = self.length + key_states.shape[-2]
            if end > self._k.shape[-2]:
                self._resize(self._k.shape[0], max(end, 2 * self._k.shape[-2]))
            self._k[:, :, self.length:end] = key_states
            self._v[:, :, self.length:end] = value_states
            self.length = end
            self._views()
            return self.keys, self.values

        def _resize(self, batch: int, capacity: int, rows=None) -> None:
            k, v = self._k[:, :, :self.length], self._v[:, :, :self.length]
            if rows is not None:
                k, v = k[rows], v[rows]
            self._k = k.new_empty((batch, k.shape[1], capacity, k.shape[3]))
            self._v = v.new_empty((batch, v.shape[1], capacity, v.shape[3]))
            self._k[:, :, :self.length], self._v[:, :, :self.length] = k, v

        def batch_repeat_interleave(self, repeats: int) -> None:
            if self.length:
                self._resize(self._k.shape[0] * repeats, self._k.shape[-2],
                             torch.arange(self._k.shape[0], device=self._k.device).repeat_interleave(repeats))
                self._views()

        def batch_select_indices(self, indices) -> None:
            if self.length:
                self._resize(len(indices), self._k.shape[-2], indices)
                self._views()

    return BufferedLayer


def _prefill(model, prompts: list[list[int]], pad_id: int, capacity: int):
    """Run the prompts; return (last logits [B, V] fp32, cache, attention mask [B, L], last position [B])."""
    n, batch = common_prefix_len(prompts), len(prompts)
    cache = buffered_cache(model, capacity)
    if n:
        model(input_ids=torch.tensor([prompts[0][:n]], device=model.device), past_key_values=cache, use_cache=True,
              logits_to_keep=1)
        cache.batch_repeat_interleave(batch)
    width = max(len(p) - n for p in prompts)
    ids = torch.full((batch, width), pad_id, dtype=torch.long)
    suffix_mask = torch.zeros((batch, width), dtype=torch.long)
    for b, p in enumerate(prompts):
        tail = p[n:]
        ids[b, width - len(tail):] = torch.tensor(tail)
        suffix_mask[b, width - len(tail):] = 1
    mask = torch.cat([torch.ones((batch, n), dtype=torch.long), suffix_mask], dim=1)
    positions = (n + suffix_mask.cumsum(1) - 1).clamp(min=0)
    ids, mask, positions = (t.to(model.device) for t in (ids, mask, positions))
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                use_cache=True, logits_to_keep=1)
    return out.logits[:, -1].float(), cache, mask, positions[:, -1]


@torch.inference_mode()
def decode(model, prompts: list[list[int]], max_new_tokens: int, pad_id: int, choose, finished) -> list[list[int]]:
    """Generate for every prompt until `finished(row_tokens)` or `max_new_tokens`.

    Args:
        prompts: token ids per row.
        choose: `choose(logits [A, V] fp32, rows: list[int]) -> tokens [A]` for the A active rows
            (logits on the model's device; tokens on any device).
        finished: `finished(tokens: list[int]) -> bool`, called after each new token of a row.
    Returns the new tokens of every row (the finishing token included).

    Finished rows leave the batch (and the KV cache) once they are COMPACT_SHARE of it: dropping
    them one by one copied the whole cache each time (8% of a batch-64 run); until then they
    run along and their tokens are ignored.
    """
    logits, cache, mask, last = _prefill(model, prompts, pad_id, max(map(len, prompts)) + max_new_tokens)
    rows = list(range(len(prompts)))  # prompt index of each batch row
    done = [False] * len(rows)
    out: list[list[int]] = [[] for _ in prompts]
    for step in range(max_new_tokens):
        live = [j for j, d in enumerate(done) if not d]
        picked = choose(logits if len(live) == len(rows) else logits[live], [rows[j] for j in live])
        tokens = torch.full((len(rows),), pad_id, dtype=torch.long)
        tokens[live] = picked.cpu()  # one copy per step, not one per row
        for j, token in zip(live, tokens[live].tolist()):
            out[rows[j]].append(token)
            done[j] = finished(out[rows[j]])
        if all(done) or step == max_new_tokens - 1:
            break
        if sum(done) >= max(1.0, COMPACT_SHARE * len(rows)):
            keep = [j for j, d in enumerate(done) if not d]
            index = torch.tensor(keep, device=model.device)
            cache.batch_select_indices(index)
            mask, last, tokens = mask[index], last[index], tokens[index.cpu()]
            rows, done = [rows[j] for j in keep], [False] * len(keep)
        mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
        last = last + 1
        logits = model(input_ids=tokens[:, None].to(model.device), attention_mask=mask, position_ids=last[:, None],
                       past_key_values=cache, use_cache=True).logits[:, -1].float()
    return out


def newline_counts(tokenizer) -> dict[int, int]:
    """Token id -> number of newlines in the token (byte-level 'Ċ' or SentencePiece '<0x0A>')."""
    counts = {}
    for i, piece in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
        n = piece.count("Ċ") + piece.count("\n") + piece.count("<0x0A>") if piece else 0
        if n:
            counts[i] = n
    return counts


def paragraph_stop(stop_ids: set[int], newlines: dict[int, int], min_tokens: int = 16):
    """`finished` for sampled inputs: an end token, or a blank line after `min_tokens` tokens
    (only the first paragraph is kept; a short preamble like "Here is a text:" may precede it)."""
    def finished(tokens: list[int]) -> bool:
        t = tokens[-1]
        if t in stop_ids:
            return True
        if len(tokens) < min_tokens or t not in newlines:
            return False
        return newlines[t] >= 2 or (len(tokens) > 1 and tokens[-2] in newlines)
    return finished


def sample(model, tokenizer, prompts: list[str], max_new_tokens: int, seed: int, stop_ids: set[int],
           newlines: dict[int, int]) -> list[str]:
    """Sampled continuations (temperature 0.9, top-k 50, top-p 0.95) of chat prompts, each stopped at the
    end of its first paragraph; deterministic for a given seed and batch."""
    gen = torch.Generator().manual_seed(seed)

    def choose(logits, rows):
        # top-k before top-p, as `generate` does by default (top_k 50): a full sort of the
        # vocabulary costs as much as the forward pass (measured 0.38 s CPU per step at batch 64).
        top, order = (logits / TEMPERATURE).topk(TOP_K, dim=-1)
        top, order = top.cpu(), order.cpu()  # the CPU generator draws: the same samples on any device
        probs = torch.softmax(top, dim=-1)
        probs[(probs.cumsum(-1) - probs) > TOP_P] = 0.0
        pick = torch.multinomial(probs, 1, generator=gen)
        return order.gather(1, pick)[:, 0]

    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    out = decode(model, ids, max_new_tokens, _pad(tokenizer), choose, paragraph_stop(stop_ids, newlines))
    return tokenizer.batch_decode(out, skip_special_tokens=True)


def greedy_topk(model, tokenizer, prompts: list[str], max_new_tokens: int, k: int, stop_ids: set[int],
                copies: list[list[int]] | None = None, copy_bias: float = 0.0) -> list[dict]:
    """Greedy answers with the top-k log-probs (T=1) of every answer token; with `copy_bias`, each
    prompt's `copies` ids get that logit bonus first (distill/copy_bias.py), so the answer and its
    log-probs are those of the biased distribution.

    Returns per prompt: tokens (list[int], the end token included when the row stopped by itself),
    topk_ids (int64 [n, k]) and topk_logp (float32 [n, k]), n = len(tokens).
    """
    rows_ids: list[list[torch.Tensor]] = [[] for _ in prompts]
    rows_logp: list[list[torch.Tensor]] = [[] for _ in prompts]

    def choose(logits, rows):
        if copy_bias:
            logits = add_copy_bias(logits.clone(), [copies[row] for row in rows], copy_bias)
        top = torch.log_softmax(logits, dim=-1).topk(k, dim=-1)
        indices, values = top.indices.cpu(), top.values.cpu()
        for j, row in enumerate(rows):
            rows_ids[row].append(indices[j])
            rows_logp[row].append(values[j])
        return indices[:, 0]

    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    out = decode(model, ids, max_new_tokens, _pad(tokenizer), choose, lambda tokens: tokens[-1] in stop_ids)
    return [{"tokens": toks, "topk_ids": torch.stack(i).numpy(), "topk_logp": torch.stack(lp).numpy()}
            for toks, i, lp in zip(out, rows_ids, rows_logp)]


def _pad(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
