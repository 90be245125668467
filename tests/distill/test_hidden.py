"""Hidden-state loss: golden values on tiny tensors, projections, and layer taps on tiny Llamas
(teacher 2 layers hidden 64, student 2 layers hidden 32)."""

import numpy as np
import pytest
import torch

from edgestill.distill.hidden import (
    HiddenStateLoss,
    LayerTap,
    default_layer_map,
    gather_answers,
    hidden_rows,
    teacher_answer_states,
)


def tiny_llama(width: int, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=width // 4, vocab_size=97, max_position_embeddings=64)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).eval()


def test_default_layer_map_pairs_each_student_layer_with_its_source():
    assert default_layer_map([0, 1, 26, 29]) == [(0, 0), (1, 1), (2, 26), (3, 29)]


def test_hidden_rows_golden():
    s = np.array([[1.0, 2.0, 0.0], [0.5, -1.0, 2.0]])
    t = np.array([[2.0, 1.0, 1.0], [0.5, -1.0, 2.0]])
    cos = (s * t).sum(-1) / np.linalg.norm(s, axis=-1) / np.linalg.norm(t, axis=-1)
    got_cos = hidden_rows("cosine", torch.tensor(s), torch.tensor(t)).numpy()
    got_mse = hidden_rows("mse", torch.tensor(s), torch.tensor(t)).numpy()
    np.testing.assert_allclose(got_cos, 1 - cos, atol=1e-6)
    np.testing.assert_allclose(got_mse, ((s - t) ** 2).mean(-1), atol=1e-6)
    with pytest.raises(ValueError, match="cosine, mse"):
        hidden_rows("l1", torch.tensor(s), torch.tensor(t))


def test_projection_only_when_widths_differ_and_mask_applies():
    same = HiddenStateLoss([(0, 0)], 8, 8, "mse")
    assert sum(p.numel() for p in same.parameters()) == 0
    wide = HiddenStateLoss([(0, 1), (1, 3)], 32, 64, "cosine")
    assert [tuple(p.shape) for p in wide.parameters()] == [(64, 32), (64, 32)]
    assert wide.student_layers == [0, 1] and wide.teacher_layers == [1, 3]
    s, t = torch.randn(3, 8), torch.randn(3, 8)
    t_masked = torch.cat([s[:2], t[2:]])  # only the last row differs, and it is masked out
    assert same([s], [t_masked], torch.tensor([True, True, False])).item() == pytest.approx(0.0, abs=1e-7)
    assert same([s], [t_masked], torch.tensor([True, True, True])).item() > 0


def test_selection_init_recovers_width_pruned_states():
    t = torch.randn(4, 64)
    channels = list(range(0, 64, 2))
    t[:, 1::2] = 0.0  # the teacher's pruned channels carry nothing here
    loss = HiddenStateLoss([(0, 0)], 32, 64, "mse", teacher_channels=channels)
    assert loss([t[:, channels]], [t], torch.ones(4, dtype=torch.bool)).item() == pytest.approx(0.0, abs=1e-7)


def test_projection_learns_a_width_change():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(64, 32, generator=g)
    t = s @ torch.randn(32, 64, generator=g)  # teacher states: a linear image of the student's
    loss_fn = HiddenStateLoss([(0, 0)], 32, 64, "cosine")
    opt = torch.optim.Adam(loss_fn.parameters(), lr=0.05)
    mask = torch.ones(64, dtype=torch.bool)
    first = loss_fn([s], [t], mask).item()
    for _ in range(100):
        opt.zero_grad()
        loss = loss_fn([s], [t], mask)
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * first


def test_layer_tap_records_raw_layer_outputs():
    model = tiny_llama(64, seed=0)
    ids = torch.randint(0, 97, (2, 6), generator=torch.Generator().manual_seed(1))
    model.model(input_ids=ids, output_hidden_states=True)  # transformers may add hooks of its own
    hooks_before = dict(model.model.layers[0]._forward_hooks)
    with LayerTap(model, [0, 1]) as out:
        ref = model.model(input_ids=ids, output_hidden_states=True)
    torch.testing.assert_close(out[0], ref.hidden_states[1])
    torch.testing.assert_close(model.model.norm(out[1]), ref.last_hidden_state)  # un-normed last layer
    assert dict(model.model.layers[0]._forward_hooks) == hooks_before  # ours are removed on exit


def test_teacher_and_student_align_on_answer_tokens_and_train():
    teacher, student = tiny_llama(64, seed=0), tiny_llama(32, seed=1)
    answer = [5, 9, 11, 4]
    s_seq, t_seq = [1, 2, 3] + answer, [1, 7, 7, 7, 2, 3] + answer  # teacher prompt is longer
    s_ids, t_ids = torch.tensor([s_seq]), torch.tensor([[0] * 2 + t_seq])  # teacher batch left-padded
    t_mask = torch.tensor([[0] * 2 + [1] * len(t_seq)])
    rows = torch.zeros(len(answer), dtype=torch.long)
    s_cols, t_cols = torch.arange(2, 2 + len(answer)), torch.arange(7, 7 + len(answer))
    loss_fn = HiddenStateLoss(default_layer_map([0, 1]), 32, 64, "cosine")
    t_states = teacher_answer_states(teacher, t_ids, t_mask, rows, t_cols, loss_fn.teacher_layers)
    assert [tuple(t.shape) for t in t_states] == [(4, 64), (4, 64)] and not t_states[0].requires_grad
    with LayerTap(student, loss_fn.student_layers) as out:
        student.model(input_ids=s_ids)
    loss = loss_fn(gather_answers(out, loss_fn.student_layers, rows, s_cols), t_states,
                   torch.ones(4, dtype=torch.bool))
    loss.backward()
    assert 0 < loss.item() < 2
    assert student.model.layers[0].mlp.down_proj.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in loss_fn.parameters())
    assert all(p.grad is None for p in teacher.parameters())


def test_same_model_same_tokens_gives_zero_loss():
    model = tiny_llama(64, seed=0)
    seqs = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])
    rows, cols = torch.tensor([0, 0, 1]), torch.tensor([3, 4, 2])
    flipped = seqs.flip(0)  # same sequences, other batch order: positions must follow
    loss_fn = HiddenStateLoss([(0, 0), (1, 1)], 64, 64, "mse")
    t_states = teacher_answer_states(model, flipped, torch.ones_like(flipped), 1 - rows, cols, [0, 1])
    with LayerTap(model, [0, 1]) as out:
        model.model(input_ids=seqs)
    loss = loss_fn(gather_answers(out, [0, 1], rows, cols), t_states, torch.ones(3, dtype=torch.bool))
    assert loss.item() == pytest.approx(0.0, abs=1e-8)


def test_spread_layer_map_ends_on_the_teachers_last_layer():
    from edgestill.distill.hidden import spread_layer_map

    assert spread_layer_map(8, 30) == [(0, 3), (1, 7), (2, 10), (3, 14), (4, 18), (5, 21), (6, 25), (7, 29)]
    assert spread_layer_map(2, 2) == [(0, 0), (1, 1)]


def test_aligned_positions_match_the_students_tokens_with_the_teachers_tail():
    from edgestill.distill.train import Example, aligned_positions

    empty = np.zeros((0, 1))
    # teacher = system turn [40, 41] + the same prompt and answer; the student's vocabulary is trimmed:
    # teacher id t -> student id t - 30 (id_map), so the tails agree only through the map
    id_map = np.full(100, -1)
    id_map[30:100] = np.arange(70)
    s = Example([1, 2, 3, 4, 5], 3, empty, empty, t_input_ids=[40, 41, 31, 32, 33, 34, 35], t_n_prompt=5)
    assert aligned_positions(s, id_map) == ([0, 1, 2, 3], [2, 3, 4, 5])
    # another tokenization of the prompt: only the answer positions, as without all_positions
    other = Example([1, 2, 3, 4, 5], 3, empty, empty, t_input_ids=[40, 31, 39, 32, 34, 35], t_n_prompt=4)
    assert aligned_positions(other, id_map) == ([2, 3], [3, 4])
