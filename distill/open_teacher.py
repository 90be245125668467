"""What distill knows of a teacher once it is open, local or served: `OpenTeacher`, and whether the recipe asks for soft targets.

A leaf module: distill.data opens teachers, distill.server_teacher builds one for a server and
distill.multi_teacher combines several; all three share these names without importing each other
in a circle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from edgestill.recipe import Recipe


@dataclass
class OpenTeacher:
    """One ready teacher: how it writes inputs and answers, and what the report says about it."""
    name: str                    # the records' "teacher" field
    tokenizer: Any
    model: Any                   # local model (the student copies its layers), or None
    write: Callable              # write(conversations, max_new_tokens, seed) -> texts
    answer: Callable             # answer(user_messages, max_new_tokens, k) -> [answer | None]
    targets: str = "topk"        # "topk" (soft targets) or "sequence" (answer text only)
    info: Callable = dict        # () -> dict, called once the answers are done


def soft_targets_asked(recipe: Recipe) -> bool:
    loss = recipe.distill.loss
    return loss.kind != "sft" and loss.alpha < 1.0
