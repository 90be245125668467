"""distill stage: recipe -> teacher data -> trained student, resumable at every step.

    python -m distill RECIPE [key=value ...] [--build-root build]

Writes build/<name>/data/ (inputs.jsonl, teacher.jsonl, top-k log-prob arrays) and
build/<name>/student/ (HF checkpoint + distill_report.json, written last). Re-running after a
kill resumes: answered inputs are skipped and training restarts from its last checkpoint.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path

from edgestill import __version__
from edgestill.errors import UserError, cli_main
from edgestill.files import atomic_write_json
from edgestill.recipe import Recipe, load_recipe, split_args

log = logging.getLogger("distill")


def run(recipe: Recipe, build_root: str = "build") -> dict:
    """Run the whole distill stage for `recipe`; return the distill report."""
    import torch

    from distill.data import teacher_data
    from distill.evaluate import evaluate
    from distill.prompts import STUDENT_CHAT_TEMPLATE
    from distill.student import count_params, make_student
    from distill.topk import TopkStore
    from distill.train import build_examples, train

    t0 = time.perf_counter()
    out = recipe.build_dir(build_root)
    data_dir, student_dir = out / "data", out / "student"
    torch.manual_seed(recipe.distill.seed)
    data = teacher_data(recipe, data_dir)
    teacher, tok, records = data.model, data.tokenizer, data.records

    student = make_student(teacher, recipe.student.layers, recipe.student.init)
    student_tok = _student_tokenizer(tok, STUDENT_CHAT_TEMPLATE)
    store = TopkStore(data_dir, recipe.distill.loss.top_k, len(tok))
    train_recs = [r for r in records if r["split"] == "train"]
    summary = train(recipe, student, student_tok, build_examples(train_recs, student_tok, recipe.task.instruction, store),
                    student_dir / "checkpoint")
    student.eval()
    result = evaluate(student, student_tok, [r for r in records if r["split"] == "eval"],
                      recipe.task.instruction, recipe.task.max_output_tokens)
    _save_student(student, student_tok, student_dir)
    report = {
        "tool_version": __version__, "recipe": recipe.to_dict(),
        "task": {"instruction": recipe.task.instruction},
        "teacher": data.info,
        "student": {"params": count_params(student), "layers": recipe.student.layers, "init": recipe.student.init},
        "data": {"train": len(train_recs), "eval": len(records) - len(train_recs), "seconds": data.info.get("seconds")},
        "train": summary, **result, "seconds": round(time.perf_counter() - t0, 1),
    }
    atomic_write_json(student_dir / "distill_report.json", report)
    shutil.rmtree(student_dir / "checkpoint", ignore_errors=True)
    return report


def _student_tokenizer(tok, template: str):
    import copy

    student_tok = copy.deepcopy(tok)
    student_tok.chat_template = template
    return student_tok


def _save_student(student, tok, folder: Path) -> None:
    from distill.teacher import write_compat_fields

    student.save_pretrained(folder)
    tok.save_pretrained(folder)
    write_compat_fields(folder)


def _main(argv: list[str]) -> int:
    overrides, rest = split_args(argv)
    parser = argparse.ArgumentParser(prog="python -m distill", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe")
    parser.add_argument("--build-root", default="build")
    args = parser.parse_args(rest)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    recipe = load_recipe(args.recipe, overrides)
    report = run(recipe, args.build_root)
    q = report["quality"]
    log.info("student: %d params (teacher %d), ROUGE-L vs teacher %.3f on %d eval inputs; %s",
             report["student"]["params"], report["teacher"]["params"], q["rouge_l_vs_teacher"], q["n_eval"],
             recipe.build_dir(args.build_root) / "student")
    return 0


if __name__ == "__main__":
    cli_main(_main)
