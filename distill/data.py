"""The teacher's side of distillation: inputs and answers, from whichever teacher the recipe names.

    data = teacher_data(recipe, data_dir)   # -> TeacherData(records, tokenizer, model, info)

Owns the choice of teacher source (bundled/local model, or an OpenAI-compatible server through
`distill.server_teacher`) and calls `distill.inputs` and
`distill.answers`; `distill.__main__` only sees the finished records. `model` is the local
teacher model when there is one (the student copies its layers), else None.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgestill.distill.answers import eos_ids, local_answerer, prepare_answers
from edgestill.distill.device import torch_device
from edgestill.distill.fields import fields_answerer
from edgestill.distill.gate import teacher_gate
from edgestill.distill.inputs import describe, local_writer, prepare_inputs
from edgestill.distill.labels import label_answerer
from edgestill.distill.multi_teacher import combined_answerer
from edgestill.distill.open_teacher import OpenTeacher, soft_targets_asked
from edgestill.distill.server_teacher import open_server_teacher
from edgestill.distill.student import count_params
from edgestill.distill.teacher import load_teacher, source_gguf, teacher_dir
from edgestill.errors import UserError
from edgestill.recipe import Recipe, TeacherSource

log = logging.getLogger(__name__)


@dataclass
class TeacherData:
    records: list[dict]          # teacher.jsonl records in id order
    tokenizer: Any               # the teacher's tokenizer (top-k ids are in its vocabulary)
    model: Any = None            # local teacher model, or None for a remote teacher
    info: dict = field(default_factory=dict)  # what the report says about the teacher


def open_teacher(t: TeacherSource, recipe: Recipe) -> OpenTeacher:
    """Load a local teacher, or connect to a server one (`distill.server_teacher`)."""
    if t.source == "openai":
        if recipe.task.labels:
            raise UserError("task.labels: a served teacher cannot score the labels yet (it needs the log-likelihood "
                            "of each label); use a local teacher (teacher.source) for a label task")
        if recipe.task.fields:
            raise UserError("task.fields: a served teacher cannot be held to the JSON format yet (it needs its logits "
                            "at every step); use a local teacher (teacher.source) for a fields task")
        if recipe.task.copy_bias:
            log.warning("task.copy_bias: a served teacher answers without it (the student and the bundles still "
                        "use it)")
        return open_server_teacher(t, recipe)

    device = torch_device(recipe.device)
    model, tok = load_teacher(t.source, t.load_in, device)
    gguf = source_gguf(t.source)
    info = {"source": t.source, "dir": str(Path(teacher_dir(t.source)).resolve()),
            "params": count_params(model), "layers": model.config.num_hidden_layers,
            **({"gguf": str(gguf)} if gguf else {})}
    write = input_writer(t, model, tok, device)
    answer = (label_answerer(model, tok, recipe.task.labels, eos_ids(model, tok)) if recipe.task.labels
              else fields_answerer(model, tok, recipe.task, eos_ids(model, tok)[0]) if recipe.task.fields
              else local_answerer(model, tok, recipe.task))
    return OpenTeacher(t.source, tok, model, write, answer, info=lambda: info)


def input_writer(t: TeacherSource, model, tok, device) -> Callable:
    """`write(conversations, max_new_tokens, seed)` for the inputs: on the teacher itself, or with
    `teacher.write_inputs_in: bf16` on a bf16 copy of an fp32/int8/nf4 teacher, loaded at the first
    call and gone once the inputs are written (`teacher_data` drops the writer). The answers, the
    student's targets, stay with the teacher as loaded.

    Measured on the bundled teacher (AMD EPYC with AVX512-BF16, 2 threads, 2 batches of 64 few-shot
    prompts): 62.5-63.9 s in fp32, 35.7-36.0 s with bf16 weights (1.75x), 48.8-51.0 s under bf16
    autocast of the fp32 weights, hence a copy rather than autocast."""
    # extra teachers (teacher.sources) have no write_inputs_in: they write no inputs
    if getattr(t, "write_inputs_in", "teacher") == "teacher" or t.load_in == "bf16":
        return local_writer(model, tok)
    loaded: list[Callable] = []

    def write(conversations: list[list[dict]], max_new_tokens: int, seed: int) -> list[str]:
        if not loaded:
            half, _ = load_teacher(t.source, "bf16", device)
            loaded.append(local_writer(half, tok))
        return loaded[0](conversations, max_new_tokens, seed)
    return write


def teacher_data(recipe: Recipe, data_dir: Path) -> TeacherData:
    """Make sure inputs and answers are complete in `data_dir`; return them with the teacher.

    With `teacher.sources`, the first teacher writes the inputs and every teacher answers
    (`distill.multi_teacher`); `info` then lists each teacher under "teachers"."""
    t0 = time.perf_counter()
    teachers = [open_teacher(t, recipe) for t in [recipe.teacher, *recipe.teacher.sources]]
    main = teachers[0]
    gate = teacher_gate(recipe, main.model, main.tokenizer)  # stops here when the teacher is useless
    inputs = prepare_inputs(recipe, data_dir, main.model, main.tokenizer, writer=main.write)
    main.write = None  # frees a bf16 copy that wrote the inputs (input_writer) before the answers
    log.info("inputs ready: %s", describe(inputs))
    if len(teachers) == 1:
        _check_soft_targets(recipe, main)
        answer = main.answer
    else:
        answer = combined_answerer(recipe, teachers, inputs)
    records = prepare_answers(recipe, data_dir, inputs, main.model, main.tokenizer, main.name, answer=answer)
    info = main.info()
    if len(teachers) > 1:
        info = {**info, "combine": recipe.teacher.combine, "teachers": [t.info() for t in teachers]}
    info["seconds"] = round(time.perf_counter() - t0, 1)
    if gate is not None:
        info["gate"] = gate
    return TeacherData(records, main.tokenizer, main.model, info)


def _check_soft_targets(recipe: Recipe, teacher: OpenTeacher) -> None:
    if teacher.targets != "topk" and soft_targets_asked(recipe):
        raise UserError(f"teacher {teacher.name}: returns no log-probs that map onto teacher.tokenizer, so soft "
                        "targets are impossible: set distill.loss.alpha=1 (sequence-level KD) or use a server "
                        "that returns logprobs (e.g. llama.cpp's server)")
