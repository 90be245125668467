"""The teacher gate: before any data is written, is the teacher better than answering trivially?

A label task's teacher is scored, the way it will answer (each label's log-likelihood), on the
recipe's seed examples and on the labelled eval file when there is one, against the accuracy of
always answering the most frequent label. When it is no better, distilling it can only copy a
useless model: the run stops with one line giving both numbers and what to do, unless
`distill.force: true`. The figures go to the distill report ("teacher_gate").
"""

from __future__ import annotations

import logging

from edgestill.distill.labels import choose
from edgestill.errors import UserError
from edgestill.files import read_user_records
from edgestill.label_metrics import label_scores
from edgestill.recipe import Recipe
from edgestill.tensors import user_message

log = logging.getLogger(__name__)


def labelled_examples(recipe: Recipe) -> list[tuple[str, str]]:
    """(input, label) of the seeds and of the labelled eval file."""
    task = recipe.task
    pairs = [(e.input, e.output) for e in task.seed_examples]
    if task.eval_labels:
        pairs += [(r["input"], r["output"]) for r in read_user_records(task.eval_labels)]
    return pairs


def teacher_gate(recipe: Recipe, model, tokenizer) -> dict | None:
    """The teacher's accuracy on the labelled examples against the majority label's; UserError when
    it is not above it (unless distill.force). None for a task without labels or a served teacher."""
    task = recipe.task
    if not task.labels or model is None:
        return None
    pairs = labelled_examples(recipe)
    answers = choose(model, tokenizer, [user_message(task.instruction, x) for x, _ in pairs], task.labels)
    scores = label_scores(answers, [y for _, y in pairs], task.labels)
    result = {"examples": scores["n"], "teacher_accuracy": scores["accuracy"],
              "teacher_accuracy_ci95": scores["accuracy_ci95"], "teacher_macro_f1": scores["macro_f1"],
              "majority_accuracy": scores["majority_accuracy"], "passed": scores["accuracy"] > scores["majority_accuracy"]}
    log.info("teacher gate: accuracy %.3f on %d labelled examples (always the majority label: %.3f)",
             result["teacher_accuracy"], result["examples"], result["majority_accuracy"])
    if not result["passed"] and not recipe.distill.force:
        raise UserError(f"teacher gate: the teacher answers {result['teacher_accuracy']:.2f} of {result['examples']} "
                        f"labelled examples right, no better than always answering the majority label "
                        f"({result['majority_accuracy']:.2f}); reword task.instruction, use a stronger teacher, or "
                        "set distill.force=true to distil it anyway")
    return result
