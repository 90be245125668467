"""distill stage: recipe -> teacher data -> trained student, resumable at every step.

    edgestill distill RECIPE [key=value ...] [--build-root build]

Writes build/<name>/data/ (inputs.jsonl, teacher.jsonl, top-k log-prob arrays) and
build/<name>/student/ (HF checkpoint + distill_report.json, written last). Re-running after a
kill resumes: answered inputs are skipped and training restarts from its last checkpoint.
"""

from __future__ import annotations

import argparse
import copy
import logging
import shutil
import time
from pathlib import Path

from edgestill import __version__
from edgestill.distill import alongside
from edgestill.distill.base import base_tokenizer_check
from edgestill.distill.data import teacher_data
from edgestill.distill.device import process_state
from edgestill.distill.evaluate import (
    compare,
    echo_input,
    eval_fingerprint,
    evaluate,
    warnings_from,
)
from edgestill.distill.fields import valid_answers
from edgestill.distill.sensitivity import teacher_noise
from edgestill.distill.student import build_student, count_params, resolve_layers
from edgestill.distill.teacher import write_compat_fields
from edgestill.distill.topk import TopkStore
from edgestill.distill.train import (
    build_examples,
    load_trained,
    seed_examples,
    seeds_recipe,
    sft_loss,
    train,
)
from edgestill.errors import UserError, cli_main
from edgestill.files import atomic_write_json
from edgestill.intervals import verdict
from edgestill.recipe import Recipe, load_recipe, split_args

log = logging.getLogger("distill")


def run(recipe: Recipe, build_root: str = "build") -> dict:
    """Run the whole distill stage for `recipe`; return the distill report ({} on non-main processes)."""
    import torch

    t0 = time.perf_counter()
    out = recipe.build_dir(build_root)
    data_dir, student_dir = out / "data", out / "student"
    procs = process_state(recipe.device)  # one process unless started by `accelerate launch`; a wrong
    # device fails here, before any work
    if recipe.student.init == "base":
        base_tokenizer_check(recipe)  # a base of another vocabulary refuses soft targets here, before any work
    with procs.main_process_first():  # the others then find the data complete and only read it
        data = teacher_data(recipe, data_dir)
    train_recs = [r for r in data.records if r["split"] == "train"]
    dropped = None
    if recipe.task.fields:  # train only on valid JSON whose values are spans of the input
        train_recs, dropped = valid_answers(train_recs, recipe.task.fields, recipe.task.distinct_values)
        log.info("fields task: %d teacher answers kept for training; dropped %d not valid JSON with the fields, "
                 "%d with a value that is not in the input, %d with overlapping values", len(train_recs),
                 dropped["invalid_json"], dropped["not_in_input"], dropped.get("overlapping_values", 0))
        if not train_recs:
            raise UserError("fields task: no teacher answer is valid JSON with task.fields copied from its input; "
                            "reword task.instruction, give clearer task.seed_examples, raise task.max_output_tokens "
                            "or use a stronger teacher")
    if recipe.task.labels:  # written for one label, answered with another: an unclear example
        train_recs, dropped = agreeing(train_recs)
    eval_recs = [r for r in data.records if r["split"] == "eval"]
    store = TopkStore(data_dir, recipe.distill.loss.top_k, len(data.tokenizer))

    selection = resolve_layers(recipe, data.model, data.tokenizer, train_recs)

    torch.manual_seed(recipe.distill.seed)  # a seeded initialisation (random init, pruning calibration)
    built = build_student(recipe, data.model, data.tokenizer, train_recs)  # built on the CPU
    built.model.to(procs.device)
    tok, instruction = built.tokenizer, recipe.task.instruction
    hidden = recipe.distill.loss.hidden_states > 0  # the teacher then runs at train time
    teacher_side = {"teacher": data.model, "teacher_pad_id": data.tokenizer.pad_token_id} if hidden else {}
    examples = build_examples(train_recs, tok, instruction, store, built.id_map, rationale=recipe.task.rationale,
                              retokenize=built.retokenize,
                              teacher_tok=data.tokenizer if hidden else None,
                              all_positions=recipe.distill.loss.hidden_positions == "all",
                              labels=recipe.task.labels if recipe.distill.loss.labels > 0 else None)
    examples = [e for e in examples if len(e.input_ids) > e.n_prompt]  # an empty answer teaches nothing
    if not examples:
        raise UserError("distill: every teacher answer is empty in the student's tokens; check the teacher's "
                        "answers in data/teacher.jsonl (task.instruction, task.max_output_tokens)")
    eval_examples = build_examples(eval_recs, tok, instruction, store, built.id_map, retokenize=built.retokenize)

    def score(model, desc):
        model.eval()
        result = evaluate(model, tok, eval_recs, eval_examples, recipe.task, desc)
        model.train()
        return result

    baselines = {}
    if "init" in recipe.distill.baselines and procs.is_main_process:
        baselines["init"] = _scored(score(built.model, "untrained init"))
    # The SFT baseline starts from the same weights: a copy before training, not a second
    # build_student (which repeats layer cutting, pruning and vocabulary trimming: ~12 s here).
    sft = copy.deepcopy(built.model) if "sft" in recipe.distill.baselines else None
    seeds_only = copy.deepcopy(built.model) if "seeds" in recipe.distill.baselines else None

    def train_sft(position: int = 0) -> dict:
        return train(recipe, sft, tok, examples, student_dir / "checkpoint-sft", loss_cfg=sft_loss(recipe.distill.loss),
                     desc="training SFT baseline", bar_position=position)

    if alongside.wanted(recipe.distill.baselines, procs.num_processes, recipe.distill.loss.hidden_states):
        side = alongside.Alongside(lambda: train_sft(position=1), student_dir / "sft-summary.json")
        with alongside.one_thread():
            summary = train(recipe, built.model, tok, examples, student_dir / "checkpoint")
        sft_summary = {**side.join(), "alongside": True}  # trained in a child process, one thread each
        load_trained(sft, student_dir / "checkpoint-sft")
    else:
        summary = train(recipe, built.model, tok, examples, student_dir / "checkpoint", **teacher_side)
        sft_summary = {**train_sft(), "alongside": False} if sft is not None else None
    if sft is not None and procs.is_main_process:
        baselines["sft"] = {**_scored(score(sft, "SFT baseline")),
                            "train": {k: v for k, v in sft_summary.items() if k != "history"}}
    if seeds_only is not None:
        seed_exs = seed_examples(recipe.task.seed_examples, tok, instruction, recipe.distill.loss.top_k)
        seeds_summary = train(seeds_recipe(recipe, len(seed_exs)), seeds_only, tok, seed_exs,
                              student_dir / "checkpoint-seeds", loss_cfg=sft_loss(recipe.distill.loss),
                              desc="training seeds-only baseline")
        if procs.is_main_process:
            baselines["seeds"] = {**_scored(score(seeds_only, "seeds-only baseline")),
                                  "train": {k: v for k, v in seeds_summary.items() if k != "history"},
                                  "what": "the same student trained on the recipe's seed examples alone (hard targets)"}
    if not procs.is_main_process:
        return {}
    if "teacher_noise" in recipe.distill.baselines:
        baselines["teacher_noise"] = teacher_noise(
            data.model, data.tokenizer, eval_recs, lambda: build_examples(eval_recs, data.tokenizer, instruction, store),
            recipe)
    if eval_recs:
        baselines["echo_input"] = {**echo_input(eval_recs), "what": "the input itself as the answer (no model)"}
    result = score(built.model, "student")
    comparisons = {name: compare(result, b) for name, b in baselines.items() if b.get("per_example")}
    _save_student(built.model, tok, student_dir)
    report = {
        "tool_version": __version__, "recipe": recipe.to_dict(),
        "task": {"instruction": instruction, **({"labels": recipe.task.labels} if recipe.task.labels else {}),
                 **({"fields": recipe.task.fields, "verbatim": recipe.task.verbatim} if recipe.task.fields else {})},
        "teacher": data.info,
        "student": {"params": count_params(built.model), "layers": recipe.student.layers,
                    "init": recipe.student.init, **built.info,
                    **({"layer_selection": selection} if selection else {})},
        "data": {"train": len(train_recs), "eval": len(eval_recs), "seconds": data.info.get("seconds"),
                 "eval_inputs_sha256": eval_fingerprint(eval_recs), **({"dropped": dropped} if dropped else {})},
        "train": summary, **result, "baselines": baselines, "comparisons": comparisons,
        "warnings": warnings_from(comparisons), "seconds": round(time.perf_counter() - t0, 1),
    }
    atomic_write_json(student_dir / "distill_report.json", report)
    for ckpt in ("checkpoint", "checkpoint-sft", "checkpoint-seeds"):
        shutil.rmtree(student_dir / ckpt, ignore_errors=True)
    (student_dir / "sft-summary.json").unlink(missing_ok=True)
    return report


def agreeing(records: list[dict]) -> tuple[list[dict], dict | None]:
    """A label task's training records without those the teacher labels otherwise than it was asked
    to write them (`asked`, distill/inputs.py); (kept, {"label_disagrees": n}) or (records, None)
    when no record was asked for a label."""
    if not any("asked" in r for r in records):
        return records, None
    kept = [r for r in records if r.get("asked", r["output"]) == r["output"]]
    log.info("label task: %d teacher-written inputs kept for training; dropped %d the teacher labels otherwise "
             "than they were written", len(kept), len(records) - len(kept))
    if not kept:
        raise UserError("label task: the teacher labels none of its own inputs as it was asked to write them; "
                        "set task.label_request (e.g. \"a short {label} customer review\") or use a stronger teacher")
    return kept, {"label_disagrees": len(records) - len(kept)}


def _scored(result: dict) -> dict:
    """A baseline's entry: its quality and the per-example scores behind it (for `comparisons`)."""
    return {"quality": result["quality"], "per_example": result["per_example"]}


def _save_student(student, tok, folder: Path) -> None:
    student.save_pretrained(folder)
    tok.save_pretrained(folder)
    write_compat_fields(folder)


def main(argv: list[str]) -> int:
    overrides, rest = split_args(argv)
    parser = argparse.ArgumentParser(prog="edgestill distill", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe")
    parser.add_argument("--build-root", default="build")
    args = parser.parse_args(rest)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    recipe = load_recipe(args.recipe, overrides)
    report = run(recipe, args.build_root)
    if not report:  # a non-main process of `accelerate launch`
        return 0
    q = report["quality"]
    lo, hi = q.get("rouge_l_vs_teacher_ci95") or (float("nan"), float("nan"))
    log.info("student: %d params (teacher %d), ROUGE-L vs teacher %.3f (95%% CI %.3f to %.3f) on %d eval inputs; %s",
             report["student"]["params"], report["teacher"]["params"], q["rouge_l_vs_teacher"], lo, hi,
             q["n_eval"], recipe.build_dir(args.build_root) / "student")
    if "field_f1_vs_label" in q:
        log.info("student vs the labels: exact match %.3f (teacher %.3f), field F1 %.3f (95%% CI %.3f to %.3f; "
                 "teacher %.3f), valid JSON %.3f", q["exact_match_vs_label"], q["teacher_exact_match_vs_label"],
                 q["field_f1_vs_label"], *q["field_f1_vs_label_ci95"], q["teacher_field_f1_vs_label"], q["json_valid"])
    for name, gains in report["comparisons"].items():
        for metric, g in gains.items():
            log.info("student minus %s, %s: %+.3f (95%% CI %+.3f to %+.3f): %s it", name, metric, g["gain"],
                     *g["ci95"], verdict(g))
    for warning in report["warnings"]:
        log.warning("WARNING: %s", warning)
    return 0


if __name__ == "__main__":
    cli_main(main)
