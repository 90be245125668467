"""Student initialisation: a few of the teacher's layers (DistilBERT-style), random weights, or a
separately pretrained base (`student.base`, distill/base.py).

`make_student(teacher, layers, init)` returns a new model of the teacher's architecture with
`len(layers)` decoder layers. With `init="teacher-layers"`, layer j is a copy of teacher layer
`layers[j]`, and the embeddings, final norm and LM head are copied too; with `init="random"`
only the shape comes from the teacher. With `init="base"` the same copy is made from the base's
layers (all of them by default), and the student keeps the base's tokenizer and chat template.
Width pruning and vocabulary trimming apply to every kind when the recipe asks.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from edgestill.distill import prune, vocab
from edgestill.distill.layers import block_influence, select_layers
from edgestill.distill.prompts import STUDENT_CHAT_TEMPLATE
from edgestill.errors import UserError
from edgestill.tensors import chat_prompt, user_message


@dataclass
class BuiltStudent:
    model: Any                 # a transformers causal LM
    tokenizer: Any             # the student's tokenizer (its own chat template; trimmed vocab if asked)
    id_map: Any = None         # np.ndarray teacher id -> student id (-1: not kept), None when identical
    info: dict = field(default_factory=dict)  # what the report says about the initialisation
    retokenize: bool = False   # the teacher's ids are not the student's: answers re-tokenized, hard targets only


def build_student(recipe, teacher, teacher_tok, train_records: list[dict]) -> BuiltStudent:
    """The recipe's student: teacher layers (or random) and, if asked, a vocabulary trimmed to
    what the training data uses (chosen from training records only, so eval inputs stay unseen)."""
    if recipe.student.init == "base":
        return _from_base(recipe, teacher_tok, train_records)
    if teacher is None:
        raise UserError("student: the teacher is remote, so there are no teacher layers to copy; "
                        "set teacher.tokenizer to a local model folder with weights (the same model the server serves)")
    layers = recipe.student.layers
    if layers is None:
        layers = recipe.student.layers = list(range(teacher.config.num_hidden_layers))
    if isinstance(layers, int):  # random init: the first N layers' shapes (they are all alike)
        layers = list(range(layers))
    model = make_student(teacher, layers, recipe.student.init)
    tok = copy.deepcopy(teacher_tok)
    tok.chat_template = STUDENT_CHAT_TEMPLATE
    model = _pruned(model, tok, recipe, train_records)
    if not recipe.student.trim_vocab:
        return BuiltStudent(model, tok, None, {"vocab_size": len(tok)})
    return _trimmed(model, tok, recipe.task.instruction, train_records, common=recipe.student.keep_common_tokens)


def _from_base(recipe, teacher_tok, train_records: list[dict]) -> BuiltStudent:
    """The student from `student.base`: its layers (all, listed, or the N of highest block influence),
    its own tokenizer and chat template; then pruning and trimming as for any student."""
    from edgestill.distill.base import load_base, same_vocabulary

    base, tok = load_base(recipe)
    if not tok.chat_template:
        tok.chat_template = STUDENT_CHAT_TEMPLATE
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    same = same_vocabulary(tok, teacher_tok)  # a served teacher without a tokenizer: its text in these tokens
    text_only = recipe.teacher.source == "openai" and not recipe.teacher.tokenizer
    selection = _base_layers(recipe, base, tok, train_records)
    model = base if recipe.student.layers == list(range(base.config.num_hidden_layers)) \
        else make_student(base, recipe.student.layers)
    _stop_first_at_eos(model, tok)
    model = _pruned(model, tok, recipe, train_records)
    info = {"base": recipe.student.base, "base_layers": base.config.num_hidden_layers,
            "base_architecture": (base.config.architectures or [type(base).__name__])[0],
            "same_tokenizer_as_teacher": same and not text_only,
            "chat_template": "the project's ChatML" if tok.chat_template == STUDENT_CHAT_TEMPLATE else "the base's own",
            **({"layer_selection": selection} if selection else {})}
    if recipe.student.trim_vocab:
        built = _trimmed(model, tok, recipe.task.instruction, train_records, teacher_ids=same,
                         common=recipe.student.keep_common_tokens)
        return BuiltStudent(built.model, built.tokenizer, built.id_map if same else None, {**info, **built.info},
                            not same)
    return BuiltStudent(model, tok, None, {**info, "vocab_size": len(tok)}, not same)


def _base_layers(recipe, base, tok, train_records: list[dict]) -> dict | None:
    """`student.layers` for a base, written back: all of them (null), as listed, or the N of highest
    block influence on the training text (then what the report says about the choice)."""
    asked = recipe.student.layers
    if asked is None:
        recipe.student.layers = list(range(base.config.num_hidden_layers))
    if not isinstance(asked, int):
        return None
    texts = [chat_prompt(tok, user_message(recipe.task.instruction, r["input"])) + r["output"]
             for r in train_records[:32]]
    recipe.student.layers = select_layers(block_influence(base, tok, texts), asked)
    return {"method": "block-influence", "asked": asked}


def _stop_first_at_eos(model, tok) -> None:
    """The student learns to end its answers with the tokenizer's eos (distill/train.py): that id goes
    first among the generation config's stop ids, which the GGUF writer takes as its eos (the ONNX
    builder adds the tokenizer's eos by itself)."""
    stops = model.generation_config.eos_token_id
    stops = list(stops) if isinstance(stops, (list, tuple)) else [stops] if stops is not None else []
    model.generation_config.eos_token_id = [tok.eos_token_id] + [i for i in stops if i != tok.eos_token_id]


def resolve_layers(recipe, teacher, teacher_tok, train_records: list[dict]) -> dict | None:
    """`student.layers: N` -> the N teacher layers of highest block influence on the training
    text (distill/layers.py), written back into the recipe; returns what the report says about
    the choice (None when the recipe lists the layers itself)."""
    asked = recipe.student.layers
    if not isinstance(asked, int) or recipe.student.init != "teacher-layers":
        return None
    if teacher is None:
        raise UserError("student.layers: choosing layers needs the teacher's weights; set teacher.tokenizer "
                        "to a local model folder with weights, or list the layers")

    texts = [chat_prompt(teacher_tok, user_message(recipe.task.instruction, r["input"])) + r["output"]
             for r in train_records[:32]]  # 32 sequences: the ranking settles well before that
    scores = block_influence(teacher, teacher_tok, texts)
    recipe.student.layers = select_layers(scores, asked)
    return {"method": "block-influence", "asked": asked, "scores": [round(x, 4) for x in scores]}


WIDTHS = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads")


def _pruned(model, tok, recipe, train_records: list[dict]):
    """`model` narrowed to the recipe's widths by importance on the training text (or as is)."""
    sizes = {k: getattr(recipe.student, k) for k in WIDTHS if getattr(recipe.student, k) is not None}
    if not sizes:
        return model

    texts = [chat_prompt(tok, user_message(recipe.task.instruction, r["input"])) + r["output"]
             for r in train_records[:64]]  # 64 sequences: importance ranks settle well before that
    return prune.prune_width(model, prune.importance(model, prune.calibration_batches(tok, texts)), **sizes)


def _trimmed(model, tok, instruction: str, train_records: list[dict], teacher_ids: bool = True,
             common: int = 0) -> BuiltStudent:
    """The vocabulary cut to the training text's tokens (and the first `common` merges' tokens);
    `teacher_ids`: the records' target ids are in `tok`'s vocabulary (kept too, and mapped by `id_map`)."""
    texts = [chat_prompt(tok, user_message(instruction, r["input"])) for r in train_records]
    texts += [r["output"] for r in train_records] + [r["rationale"] for r in train_records if r.get("rationale")]
    extra = sorted({t for r in train_records for t in r["target_ids"]}) if teacher_ids else []
    keep = vocab.plan_trim(tok, texts, extra_ids=extra, common=common)
    new_tok = vocab.trimmed_tokenizer(tok, keep)
    vocab.trim_model(model, keep)
    return BuiltStudent(model, new_tok, vocab.id_map(keep, len(tok)), {"vocab_size": len(keep), "teacher_vocab_size": len(tok)})


def student_config(teacher_config, layers: list[int]):
    """The teacher's config with `len(layers)` hidden layers."""
    import torch

    cfg = copy.deepcopy(teacher_config)
    cfg.num_hidden_layers = len(layers)
    cfg.dtype = torch.float32  # trained in fp32 whatever precision the teacher was loaded in
    if hasattr(cfg, "quantization_config"):  # a bitsandbytes teacher's; the student is not quantized
        del cfg.quantization_config
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
        raise UserError(f"student.layers: {bad} out of range; the model the student is cut from has layers 0..{n - 1}")
    import torch

    student = AutoModelForCausalLM.from_config(student_config(teacher.config, layers), dtype=torch.float32)
    if init == "teacher-layers":
        student.load_state_dict(_copied_state(teacher, student.state_dict(), layers))
    return student


def teacher_state(teacher, names) -> dict:
    """The teacher's tensors `names` (state_dict keys) to copy into a student, floats in fp32.
    Linear weights that bitsandbytes quantized (`teacher.load_in: int8 | nf4`) are dequantized: their
    raw state holds int8 codes or packed 4-bit bytes, which once gave the student int8 codes as
    weights (228x the weights' own norm in error) and, for nf4, a shape error. A bf16 teacher's
    weights are widened, so the student trains in fp32. Only `names` are converted, so a large
    quantized teacher is never widened whole."""
    raw, modules = teacher.state_dict(), dict(teacher.named_modules())
    out = {}
    for name in names:
        owner = modules.get(name.removesuffix(".weight")) if name.endswith(".weight") else None
        plain = _dequantized(owner.weight) if getattr(owner, "weight", None) is not None else None
        tensor = raw[name] if plain is None else plain
        out[name] = tensor.detach().float() if tensor.is_floating_point() else tensor.detach()
    return out


def _dequantized(weight):
    """A bitsandbytes-quantized weight as the fp32 matrix it stands for; None for a plain one."""
    kind = type(weight).__name__
    if kind == "Params4bit" and getattr(weight, "quant_state", None) is not None:
        from bitsandbytes.functional import dequantize_4bit

        return dequantize_4bit(weight.data, weight.quant_state).float()
    if kind == "Int8Params" and getattr(weight, "SCB", None) is not None and not weight.is_floating_point():
        return weight.data.float() * (weight.SCB.float()[:, None] / 127)  # row-wise absmax codes
    return None


def _copied_state(teacher, student_sd: dict, layers: list[int]) -> dict:
    """The student's state: each tensor from the teacher tensor it stands for (kept layers renamed)."""
    renames = layer_map(layers)
    source = {}
    for name in student_sd:
        src = name
        for s_prefix, t_prefix in renames.items():
            if name.startswith(s_prefix):
                src = t_prefix + name[len(s_prefix):]
                break
        source[name] = src
    teacher_sd = teacher_state(teacher, set(source.values()))
    return {name: teacher_sd[src].clone() for name, src in source.items()}


def count_params(model) -> int:
    """Unique parameters (tied embedding/LM head counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
