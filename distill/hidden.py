"""Hidden-state loss: student layer outputs matched to the teacher's, at answer positions.

The teacher's hidden states are not stored (576 floats per layer per token would dwarf the
top-k store), so a run with `distill.loss.hidden_states > 0` runs the teacher forward on the
same batch at train time (`teacher_answer_states`, no grad) and adds

    hidden_states * mean over mapped layers of mean over answer tokens of d(P(h_s), h_t)

where d is `1 - cos` (`hidden_kind: cosine`, scale-free: the default) or the mean squared error
(`mse`: its size follows the hidden-state norms, which grow with depth), and P is a learned
linear map student width -> teacher width (identity when the widths agree). The layer map pairs
student layer j with the teacher layer it was copied from (`student.layers[j]`).

Layer outputs are taken with forward hooks on the decoder layers, not `output_hidden_states`:
transformers 5 returns the *final-normed* state as the last entry of `hidden_states`, which would
compare a normed student state with an un-normed teacher one whenever the student's last layer
is not copied from the teacher's last.

Use (the trainer adds `HiddenStateLoss`'s parameters to its optimizer):

    hl = HiddenStateLoss(default_layer_map(layers), student_width, teacher_width, "cosine")
    with LayerTap(student, hl.student_layers) as s_out:
        logits = ...student forward...
    t_states = teacher_answer_states(teacher, t_ids, t_attn, t_rows, t_cols, hl.teacher_layers)
    loss = hl(gather_answers(s_out, hl.student_layers, rows, cols), t_states, mask)
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

HIDDEN_KINDS = ("cosine", "mse")


def default_layer_map(student_layers: Sequence[int]) -> list[tuple[int, int]]:
    """Pairs (student layer j, teacher layer it was copied from): [(j, student_layers[j])]."""
    return [(j, int(t)) for j, t in enumerate(student_layers)]


def spread_layer_map(n_student: int, n_teacher: int) -> list[tuple[int, int]]:
    """Pairs (student layer j, teacher layer round((j + 1) * n_teacher / n_student) - 1): the student's
    layers spread over the teacher's depth, its last matched with the teacher's last (TinyBERT's
    uniform map)."""
    return [(j, round((j + 1) * n_teacher / n_student) - 1) for j in range(n_student)]


def hidden_rows(kind: str, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Per-token distance between projected student and teacher states.

    Args:
        kind: cosine (1 - cosine similarity) | mse (mean over features of the squared error).
        student: [N, d] student states already projected to the teacher's width.
        teacher: [N, d] teacher states.
    Returns:
        [N] tensor.
    """
    if kind == "cosine":
        return 1.0 - F.cosine_similarity(student.float(), teacher.float(), dim=-1, eps=1e-6)
    if kind == "mse":
        return (student.float() - teacher.float()).pow(2).mean(-1)
    raise ValueError(f"unknown hidden-state loss kind {kind!r}; allowed: {', '.join(HIDDEN_KINDS)}")


def selection_projection(student_width: int, teacher_channels: Sequence[int]) -> torch.Tensor:
    """[d_t, d_s] weight sending student channel i to teacher channel `teacher_channels[i]`.

    For a width-pruned student (channels kept from the teacher) this starts the projection at
    the exact inverse of the pruning; the teacher width is max(channel) + 1 or larger.
    """
    if len(teacher_channels) != student_width:
        raise ValueError(f"teacher_channels has {len(teacher_channels)} entries, student width is {student_width}")
    weight = torch.zeros(max(teacher_channels) + 1, student_width)
    weight[torch.as_tensor(list(teacher_channels)), torch.arange(student_width)] = 1.0
    return weight


class HiddenStateLoss(nn.Module):
    """Mean hidden-state distance over a layer map, with learned projections when widths differ.

    Args:
        layer_map: [(student layer, teacher layer)] pairs, 0-based decoder layer indices.
        student_width, teacher_width: hidden sizes d_s, d_t.
        kind: cosine | mse.
        teacher_channels: optional, for width-pruned students: the teacher channel each student
            channel was kept from; initialises every projection as that selection.
    """

    def __init__(self, layer_map: Sequence[tuple[int, int]], student_width: int, teacher_width: int,
                 kind: str = "cosine", teacher_channels: Sequence[int] | None = None):
        super().__init__()
        if kind not in HIDDEN_KINDS:
            raise ValueError(f"unknown hidden-state loss kind {kind!r}; allowed: {', '.join(HIDDEN_KINDS)}")
        if not layer_map:
            raise ValueError("hidden-state loss needs at least one (student layer, teacher layer) pair")
        self.layer_map, self.kind = [tuple(p) for p in layer_map], kind
        self.projections = nn.ModuleList(
            _projection(student_width, teacher_width, teacher_channels) for _ in self.layer_map)

    @property
    def student_layers(self) -> list[int]:
        return [s for s, _ in self.layer_map]

    @property
    def teacher_layers(self) -> list[int]:
        return [t for _, t in self.layer_map]

    def forward(self, student_states: Sequence[torch.Tensor], teacher_states: Sequence[torch.Tensor],
                mask: torch.Tensor) -> torch.Tensor:
        """Mean over pairs of the masked mean per-token distance.

        Args:
            student_states: one [N, d_s] tensor per layer-map pair (answer positions).
            teacher_states: one [N, d_t] tensor per pair, same positions (detached).
            mask: [N] bool.
        Returns:
            scalar tensor.
        """
        losses = []
        for proj, s, t in zip(self.projections, student_states, teacher_states, strict=True):
            rows = hidden_rows(self.kind, proj(s.float()), t.detach().float())
            losses.append((rows * mask).sum() / mask.sum().clamp(min=1))
        return torch.stack(losses).mean()


def _projection(d_s: int, d_t: int, teacher_channels: Sequence[int] | None) -> nn.Module:
    if teacher_channels is not None:
        weight = selection_projection(d_s, teacher_channels)
        if weight.shape[0] > d_t:
            raise ValueError(f"teacher_channels name channel {weight.shape[0] - 1}; teacher width is {d_t}")
        layer = nn.Linear(d_s, d_t, bias=False)
        with torch.no_grad():
            layer.weight.zero_()
            layer.weight[:weight.shape[0]] = weight
        return layer
    return nn.Identity() if d_s == d_t else nn.Linear(d_s, d_t, bias=False)


# ---------------------------------------------------------------- taking layer outputs


def decoder_layers(model) -> nn.ModuleList:
    """The decoder layers of a Hugging Face causal LM (Llama-style `model.model.layers`)."""
    inner = getattr(model, "model", model)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__}: no decoder layers found at model.model.layers")
    return layers


class LayerTap:
    """Context manager recording decoder layers' outputs {layer: [B, L, d]} during forwards."""

    def __init__(self, model, layers: Sequence[int]):
        self.model, self.layers, self.outputs, self._hooks = model, list(layers), {}, []

    def __enter__(self) -> dict[int, torch.Tensor]:
        stack = decoder_layers(self.model)
        for i in self.layers:
            self._hooks.append(stack[i].register_forward_hook(self._recorder(i)))
        return self.outputs

    def __exit__(self, *exc) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()

    def _recorder(self, i: int):
        def hook(module, args, output):
            self.outputs[i] = output[0] if isinstance(output, tuple) else output
        return hook


def gather_answers(outputs: dict[int, torch.Tensor], layers: Sequence[int], rows: torch.Tensor,
                   cols: torch.Tensor) -> list[torch.Tensor]:
    """Layer outputs at answer positions.

    Args:
        outputs: {layer: [B, L, d]} from `LayerTap`.
        layers: which layers, in order.
        rows, cols: [N] batch row and position of each answer token's state.
    Returns:
        one [N, d] tensor per layer.
    """
    return [outputs[i][rows, cols] for i in layers]


@torch.no_grad()
def teacher_answer_states(teacher, input_ids: torch.Tensor, attention_mask: torch.Tensor, rows: torch.Tensor,
                          cols: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
    """Run the teacher's decoder (no LM head) and return the chosen layers at answer positions.

    Args:
        teacher: HF causal LM. input_ids, attention_mask: [B, L] teacher-side batch.
        rows, cols: [N] answer positions in that batch (same tokens, same order as the student's).
        layers: teacher decoder layer indices.
    Returns:
        one [N, d_t] tensor per layer.
    """
    with LayerTap(teacher, layers) as outputs:
        getattr(teacher, "model", teacher)(input_ids=input_ids, attention_mask=attention_mask)
    return gather_answers(outputs, layers, rows, cols)
