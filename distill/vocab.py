"""Vocabulary trimming: keep only the tokens a task uses, in the tokenizer and in the model.

The LM head of a SmolLM2-shaped student is a 49,152 x 576 matrix, a large share of a small
student's parameters. A task uses a few thousand of those tokens, so the student keeps only:

- every special/added token (`<|im_start|>`, `<|im_end|>`, eos/pad/unk, ...);
- the byte-level base tokens (SmolLM2 has 235 of the 256; the others are bytes UTF-8 text
  never or hardly contains, which the full tokenizer cannot encode either), so any text the
  full tokenizer encodes still encodes, falling back to single bytes;
- every token the task's texts use (inputs, teacher outputs, prompts with chat template
  and instruction), plus `extra_ids` the caller wants (e.g. frequent teacher top-k ids);
- the BPE merge ancestors of those tokens.

Why the ancestors make segmentation identical: the trimmed BPE keeps a merge (a, b) when a, b
and a+b are all kept, in the original order. Every merge that fires while the full tokenizer
encodes a task word produces a symbol that ends up inside a final token, so it is an ancestor
and its merge is kept; the trimmed merge set is a subset, so at each step the lowest-ranked
applicable merge is the same one. Hence a task text encodes to `[new_id(t) for t in old_ids]`.
Unseen text still encodes (differently, with shorter pieces) and decodes back exactly.

New ids are the kept old ids in increasing order, so SmolLM2's specials (ids 0..16) keep
their ids and the new vocabulary fits uint16.

Use (what `distill/__main__.py` wires):

    texts = task_texts(train_records) + [chat_prompt(student_tok, user_message(instr, r["input"]))
                                         for r in train_records]
    keep = plan_trim(teacher_tok, texts, extra_ids=[i for r in train_records for i in r["target_ids"]])
    tok = trimmed_tokenizer(student_tok, keep); trim_model(student, keep)
    target_ids = new_ids_strict(r["target_ids"], keep); topk_ids = remap_ids(topk_ids, keep)  # -1: masked

`extra_ids=range(n)` also keeps the n first BPE tokens (ids follow merge order, i.e. the
tokenizer corpus's most frequent pieces), so text unlike the task's segments less finely.

Teacher top-k mass that falls on dropped tokens is masked in the KD loss. Trimming shrinks the
model and the LM head's share of each decode step; it barely speeds up a training step, since
train.py computes the LM head only at answer positions (measurements: docs/log.md).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Sequence

import numpy as np

from edgestill.errors import UserError


def task_texts(records: Iterable[dict]) -> list[str]:
    """The texts of teacher records worth keeping tokens for: input, output, prompt, rationale."""
    out = []
    for r in records:
        out += [r[k] for k in ("input", "output", "prompt", "rationale") if isinstance(r.get(k), str) and r[k]]
    return out


def _model_spec(tokenizer) -> dict:
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = spec["model"]
    if model.get("type") != "BPE":
        raise UserError(f"student.trim_vocab: only BPE tokenizers can be trimmed, this one is "
                        f"{model.get('type')}; set student.trim_vocab: false")
    if isinstance(model["merges"][0] if model["merges"] else [], str):
        model["merges"] = [m.split(" ", 1) for m in model["merges"]]
    return spec


def _base_tokens(spec: dict) -> set[str]:
    """The single-symbol tokens every text falls back to (the byte-level alphabet in the vocab).

    SmolLM2's vocabulary holds 235 of the 256 byte symbols: the 21 it lacks are bytes that
    never occur in UTF-8 (0xC0, 0xC1, 0xF5-0xFF), 0xF1/0xF2 and a few control bytes, which
    the full tokenizer cannot encode either. Trimming keeps every one it has.
    """
    return {t for t in spec["model"]["vocab"] if len(t) == 1}


def _with_ancestors(tokens: set[str], merges: list[list[str]]) -> set[str]:
    """`tokens` plus both parts of every merge that produces a token in the set, recursively."""
    parts: dict[str, list[tuple[str, str]]] = {}
    for a, b in merges:
        parts.setdefault(a + b, []).append((a, b))
    out, todo = set(tokens), list(tokens)
    while todo:
        for a, b in parts.get(todo.pop(), ()):
            for p in (a, b):
                if p not in out:
                    out.add(p)
                    todo.append(p)
    return out


def plan_trim(tokenizer, texts: Iterable[str], extra_ids: Iterable[int] = (), common: int = 0) -> list[int]:
    """The old ids to keep, in new-id order (increasing old id).

    Keeps added/special tokens, the byte-level base tokens, every token of `texts` (encoded
    without added specials, chat-template markers included as they appear in the text),
    `extra_ids`, the tokens of the first `common` BPE merges (merges are listed most frequent
    first), and the BPE merge ancestors of all of them.
    """
    spec = _model_spec(tokenizer)
    vocab = spec["model"]["vocab"]
    id_to_tok = {i: t for t, i in vocab.items()}
    used: set[int] = set(int(i) for i in extra_ids)
    texts = list(texts)
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []:
        used.update(ids)
    specials = {a["id"] for a in spec.get("added_tokens", [])} | set(tokenizer.all_special_ids)
    bad = sorted(i for i in used if i not in id_to_tok and i not in specials)
    if bad:
        raise UserError(f"student.trim_vocab: token ids {bad[:5]} are not in the tokenizer's vocabulary")
    tokens = {id_to_tok[i] for i in used if i in id_to_tok} | _base_tokens(spec)
    tokens |= {a + b for a, b in spec["model"]["merges"][:common]} & vocab.keys()
    keep = {vocab[t] for t in _with_ancestors(tokens, spec["model"]["merges"])} | specials
    return sorted(keep)


def trimmed_spec(spec: dict, keep: Sequence[int]) -> dict:
    """A tokenizer.json dict with only `keep` (old ids, new-id order): vocab, merges, added tokens."""
    spec = copy.deepcopy(spec)
    new_id = {old: new for new, old in enumerate(keep)}
    model = spec["model"]
    model["vocab"] = {t: new_id[i] for t, i in model["vocab"].items() if i in new_id}
    kept = model["vocab"].keys()
    model["merges"] = [[a, b] for a, b in model["merges"] if a in kept and b in kept and a + b in kept]
    added = spec.get("added_tokens", [])
    lost = [a["content"] for a in added if a["id"] not in new_id]
    if lost:
        raise UserError(f"student.trim_vocab: added tokens {lost[:5]} are not in the kept ids; "
                        "keep every added token (plan_trim does)")
    for a in added:
        a["id"] = new_id[a["id"]]
    _remap_post_processor(spec.get("post_processor"), new_id)
    return spec


def _remap_post_processor(node, new_id: dict[int, int]) -> None:
    """Rewrite special-token ids inside a TemplateProcessing (or nested) post-processor in place."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "ids" and isinstance(value, list) and all(isinstance(i, int) for i in value):
                node[key] = [new_id[i] for i in value]
            else:
                _remap_post_processor(value, new_id)
    elif isinstance(node, list):
        for item in node:
            _remap_post_processor(item, new_id)


def trimmed_tokenizer(tokenizer, keep: Sequence[int]):
    """A `PreTrainedTokenizerFast` over the kept tokens, same specials and chat template.

    Encodes task texts to `remap_ids(old_ids, keep)`, any text via byte fallback, and saves
    with `save_pretrained` as a plain `tokenizer.json` the `tokenizers` library loads.
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    spec = trimmed_spec(_model_spec(tokenizer), keep)
    backend = Tokenizer.from_str(json.dumps(spec, ensure_ascii=False))
    kwargs = {k: v for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)}
    extra = [t for t in tokenizer.special_tokens_map.get("additional_special_tokens", []) or []]
    if extra:
        kwargs["additional_special_tokens"] = extra
    return PreTrainedTokenizerFast(tokenizer_object=backend, chat_template=tokenizer.chat_template,
                                   model_max_length=tokenizer.model_max_length,
                                   padding_side=tokenizer.padding_side, **kwargs)


def id_map(keep: Sequence[int], old_vocab_size: int) -> np.ndarray:
    """[old_vocab_size] int64: new id of each old id, -1 where the token was dropped."""
    table = np.full(old_vocab_size, -1, dtype=np.int64)
    table[np.asarray(keep, dtype=np.int64)] = np.arange(len(keep))
    return table


def remap_ids(old_ids: np.ndarray, keep: Sequence[int]) -> np.ndarray:
    """Old ids (any shape, e.g. stored top-k ids [n, k]) -> new ids, -1 for dropped tokens."""
    old = np.asarray(old_ids, dtype=np.int64)
    size = max(int(keep[-1]) if len(keep) else 0, int(old.max()) if old.size else 0) + 1
    return id_map(keep, size)[old]


def new_ids_strict(old_ids: Sequence[int], keep: Sequence[int], what: str = "token ids") -> list[int]:
    """Old ids -> new ids for tokens that must be kept (e.g. answer tokens); a dropped one is an error."""
    new = remap_ids(np.asarray(old_ids, dtype=np.int64), keep)
    if (new < 0).any():
        raise UserError(f"student.trim_vocab: {what} use tokens {sorted(set(np.asarray(old_ids)[new < 0]))[:5]} "
                        "that the trimmed vocabulary dropped; include these texts in plan_trim")
    return new.tolist()


def trim_model(model, keep: Sequence[int]):
    """Cut `model`'s input embedding and LM head to the rows `keep` (in place; returns it).

    Updates config.vocab_size and the bos/eos/pad ids (config and generation config); keeps
    the embedding/LM head tie when the config ties them. Checks the ids before changing anything.
    """
    import torch

    table = {int(old): new for new, old in enumerate(keep)}
    configs = [c for c in (model.config, getattr(model, "generation_config", None)) if c is not None]
    new_ids = [_remapped_config_ids(c, table) for c in configs]
    index = torch.as_tensor(list(keep), dtype=torch.long)
    emb = model.get_input_embeddings()
    new_emb = torch.nn.Embedding(len(keep), emb.weight.shape[1], dtype=emb.weight.dtype)
    new_emb.weight.data.copy_(emb.weight.data[index])
    head = model.get_output_embeddings()
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    model.set_input_embeddings(new_emb)
    if head is not None:
        new_head = torch.nn.Linear(head.in_features, len(keep), bias=head.bias is not None,
                                   dtype=head.weight.dtype)
        new_head.weight = new_emb.weight if tied else torch.nn.Parameter(head.weight.data[index].clone())
        if head.bias is not None:
            new_head.bias.data.copy_(head.bias.data[index])
        model.set_output_embeddings(new_head)
    model.config.vocab_size = len(keep)
    for cfg, values in zip(configs, new_ids):
        for name, value in values.items():
            setattr(cfg, name, value)
    return model


def _remapped_config_ids(cfg, table: dict[int, int]) -> dict:
    """{name: new value} for the special-token ids `cfg` sets; a dropped id is a UserError."""
    out = {}
    for name in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id", "decoder_start_token_id"):
        value = getattr(cfg, name, None)
        if value is None:
            continue
        ids = value if isinstance(value, list) else [value]
        if any(i not in table for i in ids):
            raise UserError(f"student.trim_vocab: config {name}={value} is not among the kept tokens; "
                            "keep the special tokens (plan_trim does)")
        out[name] = [table[i] for i in ids] if isinstance(value, list) else table[ids[0]]
    return out
