"""Student initialisation: a few of the teacher's layers (DistilBERT-style), or random weights.

`make_student(teacher, layers, init)` returns a new model of the teacher's architecture with
`len(layers)` decoder layers. With `init="teacher-layers"`, layer j is a copy of teacher layer
`layers[j]`, and the embeddings, final norm and LM head are copied too; with `init="random"`
only the shape comes from the teacher.
"""

from __future__ import annotations

import copy

from edgestill.errors import UserError


def student_config(teacher_config, layers: list[int]):
    """The teacher's config with `len(layers)` hidden layers."""
    cfg = copy.deepcopy(teacher_config)
    cfg.num_hidden_layers = len(layers)
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = [teacher_config.layer_types[i] for i in layers]
    return cfg


def layer_map(layers: list[int]) -> dict[str, str]:
    """Prefix renames student <- teacher for the kept decoder layers."""
    return {f"model.layers.{j}.": f"model.layers.{i}." for j, i in enumerate(layers)}


def make_student(teacher, layers: list[int], init: str = "teacher-layers"):
    """A student model built from `teacher` keeping `layers` (indices into the teacher's layers)."""
    from transformers import AutoModelForCausalLM

    n = teacher.config.num_hidden_layers
    bad = [i for i in layers if not 0 <= i < n]
    if bad:
        raise UserError(f"student.layers: {bad} out of range; the teacher has layers 0..{n - 1}")
    student = AutoModelForCausalLM.from_config(student_config(teacher.config, layers))
    if init == "teacher-layers":
        student.load_state_dict(_copied_state(teacher.state_dict(), student.state_dict(), layers))
    return student


def _copied_state(teacher_sd: dict, student_sd: dict, layers: list[int]) -> dict:
    renames = layer_map(layers)
    out = {}
    for name in student_sd:
        src = name
        for s_prefix, t_prefix in renames.items():
            if name.startswith(s_prefix):
                src = t_prefix + name[len(s_prefix):]
                break
        out[name] = teacher_sd[src].detach().clone()
    return out


def count_params(model) -> int:
    """Unique parameters (tied embedding/LM head counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
