"""Fields tasks (`task.fields`): answers that are one JSON object of exactly those fields.

    answer = fields_answerer(model, tokenizer, task, eos_id)            # the teacher, for prepare_answers
    texts = extract(model, tokenizer, messages, fields, max_new_tokens, sources=inputs)  # evaluation
    kept, dropped = valid_answers(train_records, fields)                 # the training filter

Teacher and student decode greedily among the tokens that keep the JSON valid, with the runtime's
automaton (`edgestill.runtime.fields`: plain Python + numpy, so the bundle's answers are held to
the very same format): one mask per row and step over the torch logits. The teacher sees the
recipe's seeds as earlier turns (`prompts.few_shot_messages`; the record's `prompt` is that
conversation), the student its one user turn. The teacher's soft targets are its top-k log-probs
(unconstrained) at each position of its constrained answer, as for free text. With
`task.verbatim` every non-null value must also be a span of the row's input (the runtime's
`FieldsGuide.verbatim`, one guide per row), for the teacher and in evaluation alike.

The filter drops training answers that are not valid JSON with the fields (e.g. cut short by
`task.max_output_tokens`) or whose non-null values are not spans of the input.
"""

from __future__ import annotations

import numpy as np
import torch

from edgestill.distill.generate import decode
from edgestill.distill.prompts import chat_messages_prompt, few_shot_messages
from edgestill.field_metrics import overlapping_values, parse_fields
from edgestill.runtime.fields import FieldsFormat, FieldsGuide, TokenTable, token_pieces
from edgestill.tensors import input_of


def fields_guide(model, tokenizer, fields: list[str], eos_id: int) -> FieldsGuide:
    """The token guide for `fields` over `model`'s vocabulary, in `tokenizer`'s pieces."""
    table = TokenTable.of(token_pieces(tokenizer.backend_tokenizer))
    return FieldsGuide(FieldsFormat(fields), table, model.config.vocab_size, eos_id)


def row_guides(guide: FieldsGuide, n: int, sources: list[str] | None = None) -> list[FieldsGuide]:
    """One guide per prompt: `guide` itself, or with `sources` (verbatim) its copy for each row's input."""
    return [guide] * n if sources is None else [guide.verbatim(s) for s in sources]


def constrained(model, tokenizer, prompts: list[str], guides: list[FieldsGuide], max_new_tokens: int,
                k: int = 0) -> list[dict]:
    """Greedy answers to chat `prompts` among the tokens each row's guide allows (`guides`: one per
    prompt, `row_guides`). Per prompt: tokens (the end token included when the object closed in
    time), ended, text (the object, closed by the automaton's completion when the budget ran out
    first), and with `k` the top-k log-probs per token."""
    eos = guides[0].eos_id
    states = [g.fmt.start for g in guides]
    top_ids: list[list[torch.Tensor]] = [[] for _ in prompts]
    top_logp: list[list[torch.Tensor]] = [[] for _ in prompts]

    def choose(logits, rows):
        masks = torch.from_numpy(np.stack([guides[r].allowed(states[r]) for r in rows])).to(logits.device)
        logp = torch.log_softmax(logits, dim=-1)
        picked = logp.masked_fill(~masks, float("-inf")).argmax(-1).cpu()
        if k:
            top = logp.topk(k, dim=-1)
            for j, row in enumerate(rows):
                top_ids[row].append(top.indices[j].cpu())
                top_logp[row].append(top.values[j].cpu())
        for j, row in enumerate(rows):
            states[row] = guides[row].advance(states[row], int(picked[j]))
        return picked

    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    out = decode(model, ids, max_new_tokens, pad, choose, lambda tokens: tokens[-1] == eos)
    answers = []
    for row, tokens in enumerate(out):
        ended, g = bool(tokens) and tokens[-1] == eos, guides[row]
        data = b"".join(g.table.pieces[t] for t in (tokens[:-1] if ended else tokens))
        answer = {"tokens": tokens, "ended": ended, "text": data.decode("utf-8", "replace"),
                  "closed": g.fmt.close(data, states[row]).decode("utf-8", "replace")}
        if k:
            answer.update(topk_ids=torch.stack(top_ids[row]).numpy(), topk_logp=torch.stack(top_logp[row]).numpy())
        answers.append(answer)
    return answers


BATCH = 16  # prompts per decode batch in evaluation


def extract(model, tokenizer, messages: list[str], fields: list[str], max_new_tokens: int,
            sources: list[str] | None = None) -> list[str]:
    """The JSON answer of `model` to each user message, in its own chat template (always valid);
    with `sources` (verbatim: each message's input) every non-null value is a span of its source."""
    guides = row_guides(fields_guide(model, tokenizer, fields, tokenizer.eos_token_id), len(messages), sources)
    prompts = [chat_messages_prompt(tokenizer, [{"role": "user", "content": m}]) for m in messages]
    return [a["closed"] for start in range(0, len(prompts), BATCH)
            for a in constrained(model, tokenizer, prompts[start:start + BATCH], guides[start:start + BATCH],
                                 max_new_tokens)]


def fields_answerer(model, tokenizer, task, eos_id: int):
    """`answer(user_messages, max_new_tokens, k)` for `prepare_answers`: the teacher's constrained
    answer to its few-shot conversation, its tokens + end token as `target_ids`, the top-k along them
    (with `task.verbatim`, every value a span of the message's input)."""
    guide = fields_guide(model, tokenizer, task.fields, eos_id)
    verbatim = getattr(task, "verbatim", False)

    def answer(messages: list[str], max_new_tokens: int, k: int) -> list[dict]:
        prompts = [chat_messages_prompt(tokenizer, few_shot_messages(task, m)) for m in messages]
        sources = [input_of(task, m) for m in messages] if verbatim else None
        rows = constrained(model, tokenizer, prompts, row_guides(guide, len(prompts), sources), max_new_tokens, k)
        return [{"output": r["text"], "target_ids": r["tokens"], "ended": r["ended"], "prompt": p,
                 "topk_ids": r["topk_ids"], "topk_logp": r["topk_logp"]} for r, p in zip(rows, prompts)]
    return answer


def answer_problem(record: dict, fields: list[str], distinct: bool = False) -> str | None:
    """Why a teacher record is unfit for training ("invalid_json", "not_in_input", with `distinct`
    "overlapping_values"), or None."""
    answer = parse_fields(record["output"], fields) if record.get("ended", True) else None
    if answer is None:
        return "invalid_json"
    if any(v is not None and v not in record["input"] for v in answer.values()):
        return "not_in_input"
    if distinct and overlapping_values(answer):
        return "overlapping_values"
    return None


PROBLEMS = ("invalid_json", "not_in_input", "overlapping_values")


def valid_answers(records: list[dict], fields: list[str], distinct: bool = False) -> tuple[list[dict], dict]:
    """(The records whose answer is valid JSON with the fields and copies its values from the input
    (with `distinct`, no two values overlapping: `task.distinct_values`), {problem: n} dropped)."""
    problems = [answer_problem(r, fields, distinct) for r in records]
    kept = [r for r, p in zip(records, problems) if p is None]
    return kept, {name: problems.count(name) for name in PROBLEMS if distinct or name != "overlapping_values"}
