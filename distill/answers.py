"""Teacher answers: greedy, batched, with the top-k log-probs of every answer token.

Writes `data/teacher.jsonl`, one record per input, in input order:
{"id", "split", "input", "output", "target_ids", "ended", "prompt", "teacher",
 "topk_offset", "topk_len"[, "label"][, "label_logp", "asked"]}; with `task.rationale` also "rationale" (str, the
teacher's greedy answer to `rationale_message`), "rationale_ids", "rationale_topk_offset",
"rationale_topk_len" (its top-k rows, stored after the answer's). `target_ids` are the
answer's token ids (plus the end token when the teacher stopped by itself); row t of the top-k store holds the teacher's top-k
log-probs for predicting target_ids[t]. Records are appended and fsynced one by one; a resumed
run skips answered ids, so a kill -9 loses at most the batch in flight, and the resumed
data is identical to an uninterrupted run's.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edgestill.distill.copy_bias import copy_token_ids
from edgestill.distill.generate import greedy_topk
from edgestill.distill.topk import TopkStore
from edgestill.files import JsonlAppender, read_jsonl
from edgestill.recipe import Recipe
from edgestill.tensors import chat_prompt, input_of, user_message

log = logging.getLogger(__name__)
RATIONALE_TOKENS_PER_ANSWER_TOKEN = 2  # a rationale may run to twice `task.max_output_tokens`


def eos_ids(model, tokenizer) -> list[int]:
    """All token ids that end an answer (generation config's eos ids + the tokenizer's)."""
    ids = model.generation_config.eos_token_id
    ids = list(ids) if isinstance(ids, (list, tuple)) else ([ids] if ids is not None else [])
    return sorted(set(ids) | {tokenizer.eos_token_id})


def answer_batch(model, tokenizer, prompts: list[str], max_new_tokens: int, k: int,
                 copies: list[list[int]] | None = None, copy_bias: float = 0.0) -> list[dict]:
    """Greedy answers to chat prompts with per-token top-k log-probs (T=1); with `copy_bias` each
    prompt's `copies` ids get that logit bonus (`task.copy_bias`).

    Returns one dict per prompt: output (str), target_ids (list[int]), ended (bool),
    topk_ids (int64 [n, k]), topk_logp (float32 [n, k]) with n = len(target_ids).
    Runs through `distill.generate` (shared prompt prefix once, finished rows dropped).
    """
    stop = set(eos_ids(model, tokenizer))
    answers = greedy_topk(model, tokenizer, prompts, max_new_tokens, k, stop, copies, copy_bias)
    return [_one_answer(tokenizer, a, stop) for a in answers]


def _one_answer(tokenizer, answer: dict, stop: set[int]) -> dict:
    row = answer["tokens"]
    ended = bool(row) and row[-1] in stop
    text_ids = row[:-1] if ended else row
    return {"output": tokenizer.decode(text_ids, skip_special_tokens=True).strip(),
            "target_ids": row, "ended": ended,
            "topk_ids": answer["topk_ids"], "topk_logp": answer["topk_logp"]}


def prepare_answers(recipe: Recipe, data_dir: Path, inputs: list[dict], model, tokenizer,
                    teacher_name: str, answer=None) -> list[dict]:
    """Answer every input not yet in `teacher.jsonl`; return all teacher records in id order.

    `answer(user_messages, max_new_tokens, k) -> [answer dict | None]` defaults to the local
    `model` (`local_answerer`); a server teacher passes its own. A None answer (a request that
    failed for good) is skipped and logged; a later run asks for it again."""
    answer = answer or local_answerer(model, tokenizer)
    path = data_dir / "teacher.jsonl"
    store = TopkStore(data_dir, recipe.distill.loss.top_k, len(tokenizer))
    records = read_jsonl(path)
    store.truncate_to(max((_rows_end(r) for r in records), default=0))
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
            messages = [user_message(recipe.task.instruction, r["input"]) for r in chunk]
            prompts = [chat_prompt(tokenizer, m) for m in messages]
            answers = answer(messages, recipe.task.max_output_tokens, store.k)
            rationales = _rationales(recipe, answer, chunk, store.k)
            for rec, prompt, ans, why in zip(chunk, prompts, answers, rationales):
                if ans is None or (recipe.task.rationale and why is None):
                    log.warning("teacher answers: input %d failed; skipped (a later run retries it)", rec["id"])
                elif rec["id"] not in done:
                    records.append(_write(out, store, rec, prompt, ans, teacher_name, why))
                    bar.update(1)
    return sorted(records, key=lambda r: r["id"])


def local_answerer(model, tokenizer, task=None):
    """`answer(user_messages, max_new_tokens, k)` on the local torch teacher (`answer_batch`); a
    free-text `task` with `copy_bias` has the teacher favour each input's own tokens, as the bundles do."""
    bias = float(getattr(task, "copy_bias", 0.0) or 0.0)

    def answer(messages: list[str], max_new_tokens: int, k: int) -> list[dict]:
        prompts = [chat_prompt(tokenizer, m) for m in messages]
        copies = [copy_token_ids(tokenizer, input_of(task, m)) for m in messages] if bias else None
        return answer_batch(model, tokenizer, prompts, max_new_tokens, k, copies, bias)
    return answer


def _rationales(recipe: Recipe, answer, chunk: list[dict], k: int) -> list[dict | None]:
    """With `task.rationale`: a second greedy pass asking the teacher to think step by step."""
    if not recipe.task.rationale:
        return [None] * len(chunk)
    messages = [rationale_message(recipe.task.instruction, r["input"]) for r in chunk]
    return answer(messages, RATIONALE_TOKENS_PER_ANSWER_TOKEN * recipe.task.max_output_tokens, k)


def rationale_message(instruction: str, text: str) -> str:
    """The user turn that asks for a rationale (distilling step-by-step) instead of the answer."""
    return f"{user_message(instruction, text)}\n\nThink step by step: briefly explain how to do this for the text above."


def _rows_end(record: dict) -> int:
    """First top-k row after everything `record` points at (its answer and rationale rows)."""
    end = record["topk_offset"] + record["topk_len"]
    if "rationale_topk_offset" in record:
        end = max(end, record["rationale_topk_offset"] + record["rationale_topk_len"])
    return end


def _write(out: JsonlAppender, store: TopkStore, rec: dict, prompt: str, ans: dict, teacher: str,
           why: dict | None = None) -> dict:
    offset = store.append(np.asarray(ans["topk_ids"]), np.asarray(ans["topk_logp"]))
    record = {"id": rec["id"], "split": rec["split"], "input": rec["input"], "output": ans["output"],
              "target_ids": ans["target_ids"], "ended": ans["ended"], "prompt": ans.get("prompt", prompt),
              "teacher": ans.get("teacher", teacher),
              "topk_offset": offset, "topk_len": len(ans["target_ids"])}
    if why is not None:
        record.update({"rationale": why["output"], "rationale_ids": why["target_ids"],
                       "rationale_topk_offset": store.append(np.asarray(why["topk_ids"]), np.asarray(why["topk_logp"])),
                       "rationale_topk_len": len(why["target_ids"])})
    if "label" in rec:
        record["label"] = rec["label"]
    if "asked" in rec:  # a label task's input written for this label
        record["asked"] = rec["asked"]
    if "label_logp" in ans:  # a label task: the teacher's log-likelihood of each label
        record["label_logp"] = ans["label_logp"]
    out.write(record)
    return record
