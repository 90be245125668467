"""Student initialisation from teacher layers."""

import pytest
import torch

from distill.student import count_params, make_student
from edgestill.errors import UserError
from tests.conftest import make_tiny_llama


@pytest.fixture(scope="module")
def teacher4(tmp_path_factory, teacher_dir):
    from transformers import AutoModelForCausalLM

    folder = make_tiny_llama(tmp_path_factory.mktemp("t4"), teacher_dir, num_layers=4, seed=3)
    return AutoModelForCausalLM.from_pretrained(folder).eval()


def test_all_layers_reproduce_the_teacher(teacher4):
    student = make_student(teacher4, [0, 1, 2, 3]).eval()
    ids = torch.tensor([[1, 50, 900, 7, 42]])
    with torch.no_grad():
        assert torch.allclose(student(ids).logits, teacher4(ids).logits, atol=1e-5)


def test_kept_layers_are_copies_of_the_chosen_teacher_layers(teacher4):
    student = make_student(teacher4, [0, 3])
    assert student.config.num_hidden_layers == 2
    t, s = teacher4.state_dict(), student.state_dict()
    assert torch.equal(s["model.layers.1.mlp.up_proj.weight"], t["model.layers.3.mlp.up_proj.weight"])
    assert torch.equal(s["model.layers.0.self_attn.q_proj.weight"], t["model.layers.0.self_attn.q_proj.weight"])
    assert torch.equal(s["model.embed_tokens.weight"], t["model.embed_tokens.weight"])
    assert count_params(student) < count_params(teacher4)


def test_random_init_differs_from_teacher(teacher4):
    student = make_student(teacher4, [0, 3], init="random")
    assert not torch.equal(student.state_dict()["model.layers.1.mlp.up_proj.weight"],
                           teacher4.state_dict()["model.layers.3.mlp.up_proj.weight"])


def test_out_of_range_layer_is_a_user_error(teacher4):
    with pytest.raises(UserError, match=r"student.layers.*0..3"):
        make_student(teacher4, [0, 4])
