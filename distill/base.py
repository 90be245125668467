"""A separately pretrained student (`student.base`): its folder, loading, and whether it shares the
teacher's vocabulary.

    from edgestill.distill.base import base_tokenizer_check, load_base
    same = base_tokenizer_check(recipe)     # before any work: UserError when the losses need one vocabulary
    model, tok = load_base(recipe)          # fp32, train mode; a .gguf base is converted once to the cache

Same vocabulary (the same tokens with the same ids) as the teacher: the student learns the teacher's
top-k soft targets as a teacher-layers student does. Another vocabulary: the teacher's answers are
re-tokenized with the student's tokenizer and learned as text (sequence-level KD, hard targets);
a recipe that asks for soft targets (`distill.loss.alpha < 1` with a KL kind) or hidden-state
losses is refused with one line, since those compare distributions over one vocabulary. The label
task's label-set loss compares each label's log-likelihood, a number per label string, and stays
allowed. The student keeps its base's chat template (the project's ChatML when the base has none).
"""

from __future__ import annotations

from pathlib import Path

from edgestill.distill.open_teacher import soft_targets_asked
from edgestill.distill.teacher import load_teacher, teacher_dir, tokenizer_dir
from edgestill.errors import UserError
from edgestill.recipe import Recipe


def base_dir(recipe: Recipe) -> Path:
    """The base's Hugging Face folder (a .gguf converted once to the cache, as teachers are)."""
    return Path(teacher_dir(recipe.student.base))


def teacher_tokenizer_dir(recipe: Recipe) -> Path | None:
    """The folder of the teacher's tokenizer, None for a served teacher given without one."""
    t = recipe.teacher
    if t.source == "openai":
        return tokenizer_dir(t.tokenizer) if t.tokenizer else None
    return Path(teacher_dir(t.source))


def same_vocabulary(a, b) -> bool:
    """Whether two tokenizers have the same tokens at the same ids (added tokens included)."""
    return a.get_vocab() == b.get_vocab()


def base_tokenizer_check(recipe: Recipe) -> bool:
    """Whether the base shares the teacher's vocabulary; UserError when it does not and the recipe
    asks for soft targets or hidden-state losses. Reads tokenizers only, before any work."""
    from transformers import AutoTokenizer

    folder = teacher_tokenizer_dir(recipe)
    if folder is None:  # answers are tokenized with the student's own tokenizer
        return True
    base_tok, teacher_tok = AutoTokenizer.from_pretrained(base_dir(recipe)), AutoTokenizer.from_pretrained(folder)
    if same_vocabulary(base_tok, teacher_tok):
        return True
    loss = recipe.distill.loss
    asked = [name for name, on in (("soft targets (distill.loss.alpha < 1)", soft_targets_asked(recipe)),
                                   ("hidden-state losses (distill.loss.hidden_states > 0)", loss.hidden_states > 0))
             if on]
    if asked:
        raise UserError(f"student.base: its tokenizer ({len(base_tok)} tokens) is not the teacher's ({len(teacher_tok)}), "
                        f"so {' and '.join(asked)} cannot be compared token by token; set distill.loss.kind=sft "
                        "(sequence-level KD on the teacher's text) and distill.loss.hidden_states=0")
    return False


def load_base(recipe: Recipe):
    """(model, tokenizer) of the base in fp32, ready to train (a fresh copy: the cache is read only)."""
    model, tok = load_teacher(recipe.student.base, "fp32", "cpu")
    model.train()
    return model, tok
