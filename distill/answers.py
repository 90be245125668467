"""Teacher answers: greedy, batched, with the top-k log-probs of every answer token.

Writes `data/teacher.jsonl`, one record per input, in input order:
{"id", "split", "input", "output", "target_ids", "ended", "prompt", "teacher",
 "topk_offset", "topk_len"[, "label"]}. `target_ids` are the answer's token ids (plus the end
token when the teacher stopped by itself); row t of the top-k store holds the teacher's top-k
log-probs for predicting target_ids[t]. Records are appended and fsynced one by one; a resumed
run skips answered ids, so a kill -9 loses at most the batch in flight, and the resumed
data is identical to an uninterrupted run's.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edgestill.files import JsonlAppender, read_jsonl
from edgestill.recipe import Recipe
from distill.prompts import chat_prompt, user_message
from distill.topk import TopkStore

log = logging.getLogger(__name__)


def eos_ids(model, tokenizer) -> list[int]:
    """All token ids that end an answer (generation config's eos ids + the tokenizer's)."""
    ids = model.generation_config.eos_token_id
    ids = list(ids) if isinstance(ids, (list, tuple)) else ([ids] if ids is not None else [])
    return sorted(set(ids) | {tokenizer.eos_token_id})


def answer_batch(model, tokenizer, prompts: list[str], max_new_tokens: int, k: int) -> list[dict]:
    """Greedy answers to chat prompts with per-token top-k log-probs (T=1).

    Returns one dict per prompt: output (str), target_ids (list[int]), ended (bool),
    topk_ids (int64 [n, k]), topk_logp (float32 [n, k]) with n = len(target_ids).
    """
    import torch

    tokenizer.padding_side = "left"
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    stop = eos_ids(model, tokenizer)
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             output_logits=True, return_dict_in_generate=True,
                             eos_token_id=stop, pad_token_id=tokenizer.pad_token_id)
        logits = torch.stack(out.logits, dim=1).float()  # [B, steps, V]
        top = torch.log_softmax(logits, dim=-1).topk(k, dim=-1)
    generated = out.sequences[:, enc["input_ids"].shape[1]:]
    return [_one_answer(tokenizer, row.tolist(), top.indices[b], top.values[b], stop)
            for b, row in enumerate(generated)]


def _one_answer(tokenizer, row: list[int], ids, logp, stop: list[int]) -> dict:
    end = next((i for i, t in enumerate(row) if t in stop), None)
    n = len(row) if end is None else end + 1
    text_ids = row[:n] if end is None else row[:end]
    return {"output": tokenizer.decode(text_ids, skip_special_tokens=True).strip(),
            "target_ids": row[:n], "ended": end is not None,
            "topk_ids": ids[:n].numpy(), "topk_logp": logp[:n].numpy()}


def prepare_answers(recipe: Recipe, data_dir: Path, inputs: list[dict], model, tokenizer,
                    teacher_name: str) -> list[dict]:
    """Answer every input not yet in `teacher.jsonl`; return all teacher records in id order."""
    path = data_dir / "teacher.jsonl"
    store = TopkStore(data_dir, recipe.distill.loss.top_k, len(tokenizer))
    records = read_jsonl(path)
    store.truncate_to(max((r["topk_offset"] + r["topk_len"] for r in records), default=0))
    done = {r["id"] for r in records}
    batch = recipe.teacher.batch_size
    # Batches are fixed slices of the inputs, and a half-answered batch is answered again whole:
    # a resumed run then computes exactly what an uninterrupted run computes (same padding, same
    # numerics), so the data does not depend on where a kill happened.
    chunks = [inputs[i:i + batch] for i in range(0, len(inputs), batch)]
    todo = sum(r["id"] not in done for r in inputs)
    with JsonlAppender(path) as out, tqdm(total=todo, desc="teacher answers", unit="input") as bar:
        for chunk in chunks:
            if all(r["id"] in done for r in chunk):
                continue
            prompts = [chat_prompt(tokenizer, user_message(recipe.task.instruction, r["input"])) for r in chunk]
            answers = answer_batch(model, tokenizer, prompts, recipe.task.max_output_tokens, store.k)
            for rec, prompt, ans in zip(chunk, prompts, answers):
                if rec["id"] not in done:
                    records.append(_write(out, store, rec, prompt, ans, teacher_name))
                    bar.update(1)
    return sorted(records, key=lambda r: r["id"])


def _write(out: JsonlAppender, store: TopkStore, rec: dict, prompt: str, ans: dict, teacher: str) -> dict:
    offset = store.append(np.asarray(ans["topk_ids"]), np.asarray(ans["topk_logp"]))
    record = {"id": rec["id"], "split": rec["split"], "input": rec["input"], "output": ans["output"],
              "target_ids": ans["target_ids"], "ended": ans["ended"], "prompt": prompt, "teacher": teacher,
              "topk_offset": offset, "topk_len": len(ans["target_ids"])}
    if "label" in rec:
        record["label"] = rec["label"]
    out.write(record)
    return record
