"""Evaluation of the trained student on the held-out split, against the teacher (and labels).

Greedy answers from the PyTorch student, scored with ROUGE-L F1 against the teacher's answers
(`rouge_l_vs_teacher`) and, when the eval records carry labels, against them
(`rouge_l_vs_label`, `teacher_rouge_l_vs_label`). `exact_match_vs_teacher` counts answers
with the teacher's words (case, punctuation and spacing ignored: edgestill/metrics.py). With 24
eval inputs a mean moves by a few points with the choice of inputs, so each mean comes with its
95% bootstrap interval (`*_ci95`, edgestill/intervals.py), and `per_example` keeps the scores
behind it; `compare` gives a model's paired gain over a baseline scored on the same inputs
(`comparisons` in distill_report.json).

A fields task (`task.fields`) answers through constrained decoding (distill/fields.py; with
`task.verbatim` every value a span of the input, as the teacher answered) and is scored against
the labels with `exact_match_vs_label` (every field equal), `field_f1_vs_label` (token F1 per
field) and `json_valid` (edgestill/field_metrics.py), each with its interval.

`echo_input` scores a reference that needs no model: the input itself given as the answer. For
tasks whose answers copy from the input (summaries, extraction) it is the bar a student must
clear before it is of any use.
"""

from __future__ import annotations

import json

from tqdm import tqdm

from edgestill.distill.copy_bias import CopyBias, copy_token_ids
from edgestill.distill.device import to_device
from edgestill.distill.fields import extract
from edgestill.distill.labels import choose
from edgestill.distill.train import AnswerLogits, collate
from edgestill.field_metrics import field_scores, parse_fields
from edgestill.intervals import interval, paired_gain, verdict
from edgestill.label_metrics import label_scores
from edgestill.metrics import exact_match_rate, mean_rouge_l, novel_word_share, rouge_l
from edgestill.tensors import chat_prompt, user_message


def greedy_answers(model, tokenizer, texts: list[str], instruction: str, max_new_tokens: int,
                   batch_size: int = 16, desc: str = "student", copy_bias: float = 0.0) -> list[str]:
    """Greedy answers of `model` to `texts` with its own chat template; with `copy_bias` (`task.copy_bias`)
    each text's own tokens get that logit bonus, as in the runtime."""
    import torch
    from transformers import LogitsProcessorList

    tokenizer.padding_side = "left"
    out = []
    for start in tqdm(range(0, len(texts), batch_size), desc=f"{desc} answers eval", unit="batch"):
        batch = texts[start:start + batch_size]
        prompts = [chat_prompt(tokenizer, user_message(instruction, t)) for t in batch]
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        bias = [CopyBias([copy_token_ids(tokenizer, t) for t in batch], copy_bias)] if copy_bias else []
        with torch.inference_mode():
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 logits_processor=LogitsProcessorList(bias),
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        out += [s.strip() for s in tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)]
    return out


def agreement_counts(model, examples, pad_id: int, batch_size: int = 16) -> tuple[list[int], list[int]]:
    """Per example: (answer positions where the student's argmax is the teacher's token,
    teacher-forced; answer positions)."""
    import torch

    hits, totals = [], []
    head = AnswerLogits(model)
    for start in range(0, len(examples), batch_size):
        batch = to_device(collate(examples[start:start + batch_size], pad_id), model.device)
        with torch.inference_mode():
            logits = head(batch["input_ids"], batch["attention_mask"], batch["rows"], batch["cols"])
        n = len(examples[start:start + batch_size])
        right = logits.argmax(-1) == batch["targets"]
        hits += torch.bincount(batch["rows"][right], minlength=n).tolist()
        totals += torch.bincount(batch["rows"], minlength=n).tolist()
    return hits, totals


def echo_input(eval_records: list[dict]) -> dict:
    """Quality of answering each eval record with its own input: ROUGE-L vs the teacher (and vs
    the labels when the records carry them)."""
    scores = [rouge_l(r["input"], r["output"]) for r in eval_records]
    quality = {"n_eval": len(eval_records), "rouge_l_vs_teacher": round(sum(scores) / len(scores), 4),
               "rouge_l_vs_teacher_ci95": interval(scores)}
    labelled = [r for r in eval_records if "label" in r]
    if labelled:
        quality["rouge_l_vs_label"] = round(mean_rouge_l([r["input"] for r in labelled],
                                                         [r["label"] for r in labelled]), 4)
    return {"quality": quality, "per_example": {"rouge_l_vs_teacher": [round(x, 4) for x in scores]}}


def evaluate(model, tokenizer, eval_records: list[dict], eval_examples, task, desc: str = "student") -> dict:
    """Quality figures of a model on `eval_records` (teacher records, split == "eval") and the
    matching teacher-forced `eval_examples` (from `distill.train.build_examples`)."""
    texts = [r["input"] for r in eval_records]
    messages = [user_message(task.instruction, x) for x in texts]
    if task.labels:  # a label task answers with one label, chosen by likelihood: never free text
        predictions = choose(model, tokenizer, messages, task.labels)
    elif task.fields:  # a fields task: one JSON object of the fields, never anything else
        predictions = extract(model, tokenizer, messages, task.fields, task.max_output_tokens,
                              sources=texts if getattr(task, "verbatim", False) else None)
    else:
        predictions = greedy_answers(model, tokenizer, texts, task.instruction, task.max_output_tokens, desc=desc,
                                     copy_bias=getattr(task, "copy_bias", 0.0))
    teacher = [r["output"] for r in eval_records]
    scores = [rouge_l(p, t) for p, t in zip(predictions, teacher)]
    hits, totals = agreement_counts(model, eval_examples, tokenizer.pad_token_id)
    rates = [h / max(1, n) for h, n in zip(hits, totals)]
    quality = {"n_eval": len(eval_records),
               "rouge_l_vs_teacher": round(sum(scores) / len(scores), 4),
               "rouge_l_vs_teacher_ci95": interval(scores),
               "token_agreement_vs_teacher": round(sum(hits) / max(1, sum(totals)), 4),
               "token_agreement_vs_teacher_ci95": interval(rates, totals) if sum(totals) else None,
               "exact_match_vs_teacher": round(exact_match_rate(predictions, teacher), 4)}
    labelled = [(p, r) for p, r in zip(predictions, eval_records) if "label" in r]
    if labelled:
        labels = [r["label"] for _, r in labelled]
        for prefix, answers in (("", [p for p, _ in labelled]), ("teacher_", [r["output"] for _, r in labelled])):
            quality[f"{prefix}rouge_l_vs_label"] = round(mean_rouge_l(answers, labels), 4)
            quality[f"{prefix}exact_match_vs_label"] = round(exact_match_rate(answers, labels), 4)
            if not (task.labels or task.fields):  # free text: words from nowhere (invented or broken)
                quality[f"{prefix}novel_word_share"] = round(sum(
                    novel_word_share(a, r["input"], r["label"]) for a, (_, r) in zip(answers, labelled)) / len(labelled), 4)
    examples = [{"input": r["input"], "teacher": r["output"], "student": p}
                for p, r in zip(predictions[:5], eval_records[:5])]
    per_example = {"rouge_l_vs_teacher": [round(x, 4) for x in scores], "agreeing_tokens": hits,
                   "answer_tokens": totals}
    if task.labels and labelled:
        quality.update(label_quality(labelled, task.labels))
        per_example["correct_vs_label"] = [int(p == r["label"]) for p, r in labelled]
    if task.fields:
        figures, rows = field_quality(predictions, eval_records, task.fields)
        quality.update(figures)
        per_example.update(rows)
    return {"quality": quality, "examples": examples, "per_example": per_example}


def field_quality(predictions: list[str], eval_records: list[dict], fields: list[str]) -> tuple[dict, dict]:
    """A fields task's figures for the model and the teacher: the share of valid JSON answers, and
    against the labels exact match and field F1 (each with its interval); the model's per-example
    `correct_vs_label` (exact match) and `field_f1_vs_label`."""
    figures, rows = {}, {}
    for prefix, answers in (("", predictions), ("teacher_", [r["output"] for r in eval_records])):
        valid = [float(parse_fields(a, fields) is not None) for a in answers]
        figures[f"{prefix}json_valid"] = round(sum(valid) / len(valid), 4)
        figures[f"{prefix}json_valid_ci95"] = interval(valid)
    labelled = [(p, r) for p, r in zip(predictions, eval_records) if "label" in r]
    if not labelled:
        return figures, rows
    golds = [r["label"] for _, r in labelled]
    for prefix, answers in (("", [p for p, _ in labelled]), ("teacher_", [r["output"] for _, r in labelled])):
        s = field_scores(answers, golds, fields)
        for name in ("exact_match", "field_f1"):
            figures[f"{prefix}{name}_vs_label"] = s[name]
            figures[f"{prefix}{name}_vs_label_ci95"] = s[f"{name}_ci95"]
        if not prefix:
            rows = {"correct_vs_label": s["per_example"]["correct"], "field_f1_vs_label": s["per_example"]["field_f1"]}
    return figures, rows


def label_quality(labelled: list[tuple[str, dict]], labels: list[str]) -> dict:
    """Accuracy and macro-F1 against the ground-truth labels, for the model and the teacher."""
    golds = [r["label"] for _, r in labelled]
    out = {}
    for prefix, answers in (("", [p for p, _ in labelled]), ("teacher_", [r["output"] for _, r in labelled])):
        s = label_scores(answers, golds, labels)
        out.update({f"{prefix}accuracy_vs_label": s["accuracy"], f"{prefix}accuracy_vs_label_ci95": s["accuracy_ci95"],
                    f"{prefix}macro_f1_vs_label": s["macro_f1"], f"{prefix}macro_f1_vs_label_ci95": s["macro_f1_ci95"]})
    out["majority_label_accuracy"] = label_scores(golds, golds, labels)["majority_accuracy"]
    return out


ADVICE = {  # what to try when the student is clearly below a baseline (paired, 95%)
    "sft": "the soft targets made it worse than hard targets alone: check distill.loss (kind, temperature, "
           "alpha) and distill.lr",
    "init": "training made it worse than its untrained initialisation: lower distill.lr, check the data",
    "echo_input": "its answers are further from the teacher's than the input itself is: more inputs "
                  "(task.n_train), more distill.steps or a larger student",
}


def warnings_from(comparisons: dict) -> list[str]:
    """One warning per baseline the student is clearly below on ROUGE-L (`compare` results), with advice."""
    out = []
    for name, gains in comparisons.items():
        g = gains.get("rouge_l_vs_teacher")
        if g and name in ADVICE and verdict(g) == "below":
            out.append(f"the student is below the {name} baseline on ROUGE-L vs the teacher ({g['gain']:+.3f}, "
                       f"95% interval {g['ci95'][0]:+.3f} to {g['ci95'][1]:+.3f}): {ADVICE[name]}")
    return out


def eval_fingerprint(eval_records: list[dict]) -> str:
    """sha256 of the eval inputs and the teacher's answers, in order: two reports with the same
    fingerprint were scored on the same examples, so their per-example scores can be paired."""
    import hashlib

    digest = hashlib.sha256()
    for r in eval_records:
        digest.update(json.dumps([r["input"], r["output"]], ensure_ascii=False).encode("utf-8"))
    return digest.hexdigest()


def compare(model: dict, baseline: dict) -> dict:
    """Paired gains of `model` over `baseline` (each an `evaluate` / `echo_input` result with
    `per_example`), on every score both have: ROUGE-L, label accuracy or fields exact match and
    field F1, and token agreement (token-weighted)."""
    a, b = model.get("per_example") or {}, baseline.get("per_example") or {}
    gains = {}
    if a.get("rouge_l_vs_teacher") and b.get("rouge_l_vs_teacher"):
        gains["rouge_l_vs_teacher"] = paired_gain(a["rouge_l_vs_teacher"], b["rouge_l_vs_teacher"])
    if a.get("correct_vs_label") and len(b.get("correct_vs_label") or ()) == len(a["correct_vs_label"]):
        # correct: the right label (a label task's accuracy) or every field right (a fields task's exact match)
        name = "exact_match_vs_label" if "field_f1_vs_label" in a else "accuracy_vs_label"
        gains[name] = paired_gain(a["correct_vs_label"], b["correct_vs_label"])
    if a.get("field_f1_vs_label") and len(b.get("field_f1_vs_label") or ()) == len(a["field_f1_vs_label"]):
        gains["field_f1_vs_label"] = paired_gain(a["field_f1_vs_label"], b["field_f1_vs_label"])
    if a.get("answer_tokens") and b.get("answer_tokens") == a["answer_tokens"] and sum(a["answer_tokens"]):
        n = a["answer_tokens"]
        gains["token_agreement_vs_teacher"] = paired_gain(
            [h / max(1, t) for h, t in zip(a["agreeing_tokens"], n)],
            [h / max(1, t) for h, t in zip(b["agreeing_tokens"], n)], weights=n)
    return gains
