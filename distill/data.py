"""The teacher's side of distillation: inputs and answers, from whichever teacher the recipe names.

    data = teacher_data(recipe, data_dir)   # -> TeacherData(records, tokenizer, model, info)

Owns the choice of teacher source (bundled/local model today) and calls `distill.inputs` and
`distill.answers`; `distill.__main__` only sees the finished records. `model` is the local
teacher model when there is one (the student copies its layers), else None.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgestill.recipe import Recipe

log = logging.getLogger(__name__)


@dataclass
class TeacherData:
    records: list[dict]          # teacher.jsonl records in id order
    tokenizer: Any               # the teacher's tokenizer (top-k ids are in its vocabulary)
    model: Any = None            # local teacher model, or None for a remote teacher
    info: dict = field(default_factory=dict)  # what the report says about the teacher


def teacher_data(recipe: Recipe, data_dir: Path) -> TeacherData:
    """Make sure inputs and answers are complete in `data_dir`; return them with the teacher."""
    from distill.answers import prepare_answers
    from distill.inputs import describe, prepare_inputs
    from distill.student import count_params
    from distill.teacher import load_teacher, teacher_dir

    t0 = time.perf_counter()
    model, tok = load_teacher(recipe.teacher.source, recipe.teacher.load_in)
    inputs = prepare_inputs(recipe, data_dir, model, tok)
    log.info("inputs ready: %s", describe(inputs))
    records = prepare_answers(recipe, data_dir, inputs, model, tok, recipe.teacher.source)
    info = {"source": recipe.teacher.source, "dir": str(Path(teacher_dir(recipe.teacher.source)).resolve()),
            "params": count_params(model), "layers": model.config.num_hidden_layers,
            "seconds": round(time.perf_counter() - t0, 1)}
    return TeacherData(records, tok, model, info)
