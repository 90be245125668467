"""Several teachers at once (`teacher.sources`): one answer function over all of them.

    teacher:
      source: smollm2-135m-instruct      # the first teacher: writes the inputs, gives the student its layers
      sources: [{source: ./other-model}, {source: openai, base_url: ..., model: ..., tokenizer: ...}]
      combine: round_robin                # or average

- round_robin (per-example choice): input i is answered by teacher i mod n (its rationale too).
  An answer from a teacher whose tokenizer differs from the first teacher's is re-tokenized with
  the first teacher's tokenizer (sequence-level KD). Soft targets (distill.loss.alpha < 1) are
  refused unless every teacher returns top-k log-probs in the first teacher's vocabulary.
- average: the first teacher answers greedily; every other teacher scores that same answer under
  teacher forcing, and the stored top-k is the top-k of the mean probability over teachers (an id
  outside a teacher's own top-k counts as probability 0 there, a lower bound). Needs local weights
  for every teacher and one shared tokenizer; anything else is a clear UserError.

`teacher_data` in `distill.data` calls `combined_answerer`; each record's "teacher" names the
teacher that answered it ("avg(a,b)" for averaged records).
"""

from __future__ import annotations

import numpy as np

from edgestill.distill.answers import eos_ids, rationale_message
from edgestill.distill.open_teacher import soft_targets_asked
from edgestill.distill.server_teacher import text_answer
from edgestill.errors import UserError
from edgestill.recipe import Recipe
from edgestill.tensors import chat_prompt, user_message


def same_tokenizer(a, b) -> bool:
    """True when both tokenizers have the same vocabulary (ids mean the same pieces)."""
    return a is b or a.get_vocab() == b.get_vocab()


def combined_answerer(recipe: Recipe, teachers: list, inputs: list[dict]):
    """`answer(user_messages, max_new_tokens, k)` over `teachers` (`distill.data.OpenTeacher`)."""
    if recipe.teacher.combine == "average":
        return averaged(teachers)
    return round_robin(recipe, teachers, inputs)


def round_robin(recipe: Recipe, teachers: list, inputs: list[dict]):
    """Input i (and its rationale) is answered by teacher i mod n; see the module docstring."""
    main = teachers[0]
    shared = [same_tokenizer(t.tokenizer, main.tokenizer) for t in teachers]
    if soft_targets_asked(recipe):
        for t, same in zip(teachers, shared):
            if t.targets != "topk" or not same:
                why = "has another tokenizer" if not same else "returns no usable log-probs"
                raise UserError(f"teacher.sources: soft targets (distill.loss.alpha < 1) need every teacher's top-k "
                                f"in the first teacher's vocabulary, and {t.name} {why}: set distill.loss.alpha=1 "
                                "(sequence-level KD) or drop that teacher")
    instruction = recipe.task.instruction
    owner = {}
    for r in inputs:
        for message in (user_message(instruction, r["input"]), rationale_message(instruction, r["input"])):
            owner[message] = r["id"] % len(teachers)
    stop = eos_ids(main.model, main.tokenizer) if main.model is not None else [main.tokenizer.eos_token_id]

    def answer(messages: list[str], max_new_tokens: int, k: int) -> list[dict | None]:
        out: list[dict | None] = [None] * len(messages)
        for j, teacher in enumerate(teachers):
            positions = [p for p, m in enumerate(messages) if owner.get(m, 0) == j]
            if not positions:
                continue
            for p, ans in zip(positions, teacher.answer([messages[p] for p in positions], max_new_tokens, k)):
                if ans is not None and not shared[j]:
                    ans = text_answer(ans["output"], ans["ended"], main.tokenizer, k, stop)
                if ans is not None:
                    ans["teacher"] = teacher.name
                out[p] = ans
        return out
    return answer


def averaged(teachers: list):
    """The first teacher answers; the top-k of every teacher's mean probability is stored."""
    main = teachers[0]
    for t in teachers:
        if t.model is None or not same_tokenizer(t.tokenizer, main.tokenizer):
            raise UserError(f"teacher.combine: average needs every teacher's weights locally and one shared "
                            f"tokenizer, and {t.name} " + ("has no local model" if t.model is None else
                                                            "has another tokenizer")
                            + "; use combine: round_robin")
    name = "avg(" + ",".join(t.name for t in teachers) + ")"

    def answer(messages: list[str], max_new_tokens: int, k: int) -> list[dict | None]:
        answers = main.answer(messages, max_new_tokens, k)
        for message, ans in zip(messages, answers):
            if ans is None:
                continue
            rows = [(np.asarray(ans["topk_ids"]), np.asarray(ans["topk_logp"]))]
            rows += [forced_topk(t.model, t.tokenizer, chat_prompt(t.tokenizer, message), ans["target_ids"], k)
                     for t in teachers[1:]]
            ans["topk_ids"], ans["topk_logp"] = average_topk(rows, k)
            ans["teacher"] = name
        return answers
    return answer


def forced_topk(model, tokenizer, prompt: str, target_ids: list[int], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's top-k (ids int64 [n, k], log-probs float32 [n, k], T=1) for predicting each of
    `target_ids` after `prompt` under teacher forcing."""
    import torch

    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([p_ids + list(target_ids)], device=model.device)).logits[0].float().cpu()
    logp = torch.log_softmax(logits[len(p_ids) - 1:len(p_ids) - 1 + len(target_ids)], dim=-1)
    top = logp.topk(k, dim=-1)
    return top.indices.numpy().astype(np.int64), top.values.numpy().astype(np.float32)


def average_topk(rows: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of the mean probability over teachers; each entry of `rows` is (ids [n, k], logp [n, k])."""
    n = rows[0][0].shape[0]
    ids_out = np.zeros((n, k), dtype=np.int64)
    logp_out = np.zeros((n, k), dtype=np.float32)
    for r in range(n):
        mean: dict[int, float] = {}
        for ids, logp in rows:
            for i, lp in zip(ids[r].tolist(), logp[r].tolist()):
                mean[i] = mean.get(i, 0.0) + float(np.exp(lp)) / len(rows)
        best = sorted(mean.items(), key=lambda kv: -kv[1])[:k]
        ids_out[r] = [i for i, _ in best]
        logp_out[r] = np.log(np.maximum([p for _, p in best], 1e-30))
    return ids_out, logp_out
