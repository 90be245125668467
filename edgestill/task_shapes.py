"""What a recipe's task shape asks of its data: a label task's label set, a fields task's fields,
their seeds and labelled files.

A label task (`task.labels: [positive, negative]`) answers with exactly one label; its seeds and
its labelled eval file may hold no other answer. A fields task (`task.fields: [day, time, place]`)
answers with one JSON object of exactly those fields, in order (values strings or null); so must
its seeds and its labelled eval file. With `task.verbatim: true` each value is a span of the input,
so each seed's values must be spans of whole words of its input (`edgestill.spans`). Checked when the recipe loads, before any work, each mistake
one line naming the key, file or record and what to do.
"""

from __future__ import annotations

import json

from edgestill.errors import UserError
from edgestill.field_metrics import field_problem, overlapping_values
from edgestill.spans import is_word_span


def check_labels(task, where: str) -> None:
    """`task.labels`: none (free text) or at least two distinct non-empty strings, which every seed
    answers with; no rationales (a label has none to learn)."""
    labels = task.labels
    if task.label_request and (not labels or "{label}" not in task.label_request
                               or task.label_request.replace("{label}", "").count("{")):
        raise UserError(f"{where}: task.label_request: a request with {{label}} in it (e.g. \"a short {{label}} "
                        f"customer review\"), for a label task only; got {task.label_request!r}")
    if task.input_request and (labels or "{" in task.input_request or "}" in task.input_request):
        raise UserError(f"{where}: task.input_request: plain words naming the inputs to write (e.g. \"a short "
                        f"message that invites someone to an event\"), for a task without labels (a label task "
                        f"has task.label_request); got {task.input_request!r}")
    check_copy_bias(task, where)
    if not labels:
        return
    if len(labels) < 2:
        raise UserError(f"{where}: task.labels: give at least two labels (a set of one has nothing to choose), "
                        f"got {labels!r}")
    if any(not isinstance(x, str) or not x.strip() or x != x.strip() for x in labels):
        raise UserError(f"{where}: task.labels: every label must be a non-empty string without surrounding spaces, "
                        f"got {labels!r}")
    if len(set(labels)) != len(labels):
        raise UserError(f"{where}: task.labels: every label must be different, got {labels!r}")
    for i, ex in enumerate(task.seed_examples, 1):
        if ex.output not in labels:
            raise UserError(f"{where}: task.seed_examples[{i}]: output {ex.output!r} is not one of task.labels "
                            f"{labels}; answer each seed with one label")
    if task.rationale:
        raise UserError(f"{where}: task.rationale: a label task answers with one label; set task.rationale: false")


def check_label_file(labels: list[str], records: list[dict], where: str) -> None:
    """Every record of a labelled file answers with one of `labels` (when the task has labels)."""
    if not labels:
        return
    bad = next(((i, r["output"]) for i, r in enumerate(records, 1) if r["output"] not in labels), None)
    if bad:
        raise UserError(f"{where}: record {bad[0]} has the label {bad[1]!r}, which is not one of task.labels "
                        f"{labels}; fix the label or add it to task.labels")


def _shape(fields: list[str]) -> str:
    return json.dumps(dict.fromkeys(fields, "..."))


def check_copy_bias(task, where: str) -> None:
    """`task.copy_bias`: a number from 0 to 20, for a free-text task (label and fields answers are constrained)."""
    bias = task.copy_bias
    if isinstance(bias, bool) or not isinstance(bias, (int, float)) or not 0 <= bias <= 20:
        raise UserError(f"{where}: task.copy_bias: a number from 0 (off) to 20, e.g. 2.0; got {bias!r}")
    if bias and (task.labels or task.fields):
        raise UserError(f"{where}: task.copy_bias: only a free-text task takes this key (label and fields answers "
                        "are constrained already); drop it")


def check_fields(task, where: str) -> None:
    """`task.fields`: none (free text) or distinct non-empty names, which every seed's output holds as
    a JSON object; not with labels, no rationales. `task.verbatim` only with fields, and then every
    seed's values are spans of its input."""
    fields = task.fields
    for key in ("verbatim", "distinct_values"):
        if getattr(task, key) and not fields:
            raise UserError(f"{where}: task.{key}: only a fields task takes this key; set task.fields or drop task.{key}")
    if not fields:
        return
    if any(not isinstance(f, str) or not f.strip() for f in fields):
        raise UserError(f"{where}: task.fields: every field must be a non-empty name, got {fields!r}")
    if len(set(fields)) != len(fields):
        raise UserError(f"{where}: task.fields: every field must be different, got {fields!r}")
    if task.labels:
        raise UserError(f"{where}: task.fields and task.labels: a task answers with one label or with JSON "
                        "fields, not both; keep one of them")
    if task.rationale:
        raise UserError(f"{where}: task.rationale: a fields task answers with a JSON object; set task.rationale: false")
    for i, ex in enumerate(task.seed_examples, 1):
        problem = field_problem(ex.output, fields)
        if problem:
            raise UserError(f"{where}: task.seed_examples[{i}]: output {problem}; answer each seed with "
                            f"{_shape(fields)} (values strings or null)")
        if task.verbatim:
            bad = next((k for k, v in json.loads(ex.output).items() if v is not None and not is_word_span(v, ex.input)),
                       None)
            if bad is not None:
                raise UserError(f"{where}: task.seed_examples[{i}]: the value of {bad!r} is empty or not a span of whole "
                                "words of the input; with task.verbatim: true copy each value from the input word for word "
                                "(or null)")
        if task.distinct_values and overlapping_values(json.loads(ex.output)):
            raise UserError(f"{where}: task.seed_examples[{i}]: two values overlap (equal, or one inside the other); "
                            "with task.distinct_values: true give each field its own part of the input, or drop the key")


def check_field_file(fields: list[str], records: list[dict], where: str) -> None:
    """Every record of a labelled file answers with a JSON object of `fields` (in a fields task)."""
    if not fields:
        return
    for i, r in enumerate(records, 1):
        problem = field_problem(r["output"], fields)
        if problem:
            raise UserError(f"{where}: record {i}: output {problem}; write each output as {_shape(fields)} "
                            "(values strings or null)")
