"""Batched generation on the local torch teacher, with the prompts' shared prefix computed once.

    texts = sample(model, tokenizer, prompts, max_new_tokens, seed)          # inputs (sampling)
    answers = greedy_topk(model, tokenizer, prompts, max_new_tokens, k, eos)  # answers + top-k

Why not `model.generate`: the prompts of one batch share a long prefix (chat system prompt,
task, few-shot examples), and rows finish at different lengths. Here the longest common token
prefix is run once at batch 1 and its KV cache repeated for every row; the rest of each prompt
is run with padding *between* prefix and suffix (mask 0, explicit position ids), so every row
sees exactly its own prompt; a finished row is dropped from the batch (and its KV cache) at
once. Measured on the bundled teacher (1 thread, CPU seconds, so the shared machine's load does
not count; 32 few-shot prompts of 176 tokens, up to 96 new tokens): `generate` 51.6 s (prefill
16.3 s, 96 steps for every row), onnxruntime-genai on the fp32 ONNX export 41 s (prefill 20 s);
see `distill/inputs.py` for the figures of this module in the input-writing loop.
"""

from __future__ import annotations

import torch

TEMPERATURE, TOP_P, TOP_K = 0.9, 0.95, 50


def common_prefix_len(rows: list[list[int]]) -> int:
    """Length of the longest token prefix shared by every row (at most shortest row - 1)."""
    n = min(len(r) for r in rows) - 1
    first = rows[0]
    for i in range(n):
        if any(r[i] != first[i] for r in rows[1:]):
            return i
    return max(n, 0)


def _prefill(model, prompts: list[list[int]], pad_id: int):
    """Run the prompts; return (last logits [B, V] fp32, cache, attention mask [B, L], last position [B])."""
    from transformers import DynamicCache

    n, batch = common_prefix_len(prompts), len(prompts)
    cache = DynamicCache(config=model.config)
    if n:
        model(input_ids=torch.tensor([prompts[0][:n]]), past_key_values=cache, use_cache=True, logits_to_keep=1)
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
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                use_cache=True, logits_to_keep=1)
    return out.logits[:, -1].float(), cache, mask, positions[:, -1]


@torch.inference_mode()
def decode(model, prompts: list[list[int]], max_new_tokens: int, pad_id: int, choose, finished) -> list[list[int]]:
    """Generate for every prompt until `finished(row_tokens)` or `max_new_tokens`.

    Args:
        prompts: token ids per row.
        choose: `choose(logits [A, V] fp32, rows: list[int]) -> tokens [A]` for the A active rows.
        finished: `finished(tokens: list[int]) -> bool`, called after each new token of a row.
    Returns the new tokens of every row (the finishing token included).
    """
    logits, cache, mask, last = _prefill(model, prompts, pad_id)
    rows = list(range(len(prompts)))
    out: list[list[int]] = [[] for _ in prompts]
    for step in range(max_new_tokens):
        tokens = choose(logits, rows)
        keep = []
        for j, row in enumerate(rows):
            out[row].append(int(tokens[j]))
            if not finished(out[row]):
                keep.append(j)
        if not keep or step == max_new_tokens - 1:
            break
        if len(keep) < len(rows):
            index = torch.tensor(keep)
            cache.batch_select_indices(index)
            mask, last, tokens = mask[index], last[index], tokens[index]
            rows = [rows[j] for j in keep]
        mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=mask.dtype)], dim=1)
        last = last + 1
        logits = model(input_ids=tokens[:, None], attention_mask=mask, position_ids=last[:, None],
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
        probs = torch.softmax(top, dim=-1)
        probs[(probs.cumsum(-1) - probs) > TOP_P] = 0.0
        pick = torch.multinomial(probs, 1, generator=gen)
        return order.gather(1, pick)[:, 0]

    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    out = decode(model, ids, max_new_tokens, _pad(tokenizer), choose, paragraph_stop(stop_ids, newlines))
    return tokenizer.batch_decode(out, skip_special_tokens=True)


def greedy_topk(model, tokenizer, prompts: list[str], max_new_tokens: int, k: int, stop_ids: set[int]) -> list[dict]:
    """Greedy answers with the top-k log-probs (T=1) of every answer token.

    Returns per prompt: tokens (list[int], the end token included when the row stopped by itself),
    topk_ids (int64 [n, k]) and topk_logp (float32 [n, k]), n = len(tokens).
    """
    rows_ids: list[list[torch.Tensor]] = [[] for _ in prompts]
    rows_logp: list[list[torch.Tensor]] = [[] for _ in prompts]

    def choose(logits, rows):
        top = torch.log_softmax(logits, dim=-1).topk(k, dim=-1)
        for j, row in enumerate(rows):
            rows_ids[row].append(top.indices[j])
            rows_logp[row].append(top.values[j])
        return top.indices[:, 0]

    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    out = decode(model, ids, max_new_tokens, _pad(tokenizer), choose, lambda tokens: tokens[-1] in stop_ids)
    return [{"tokens": toks, "topk_ids": torch.stack(i).numpy(), "topk_logp": torch.stack(lp).numpy()}
            for toks, i, lp in zip(out, rows_ids, rows_logp)]


def _pad(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
