"""Student initialisation from teacher layers."""

import pytest
import torch

from edgestill.distill.student import count_params, make_student
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


def test_block_influence_ranks_a_do_nothing_layer_last(teacher4, teacher_dir):
    """A layer whose output projections are zero passes its input through unchanged: BI 0, dropped first."""
    import copy

    from transformers import AutoTokenizer

    from edgestill.distill.layers import block_influence, select_layers

    model = copy.deepcopy(teacher4)
    layer = model.model.layers[2]
    with torch.no_grad():
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
    tok = AutoTokenizer.from_pretrained(teacher_dir)
    scores = block_influence(model, tok, ["The council voted to add bike lanes.", "Rain is expected on Sunday."])
    assert len(scores) == 4 and scores[2] < 1e-6 < min(scores[i] for i in (0, 1, 3))
    assert select_layers(scores, 3) == [0, 1, 3]


def test_select_layers_orders_and_checks():
    from edgestill.distill.layers import select_layers

    assert select_layers([0.9, 0.1, 0.5, 0.5, 0.8], 3) == [0, 2, 4]  # tie 2/3: the earlier layer
    with pytest.raises(UserError, match="student.layers: 6 layers asked, the teacher has 5"):
        select_layers([0.1] * 5, 6)


def test_recipe_layer_count_is_resolved_from_the_teacher(teacher4, teacher_dir):
    from types import SimpleNamespace

    from transformers import AutoTokenizer

    from edgestill.distill.student import resolve_layers

    tok = AutoTokenizer.from_pretrained(teacher_dir)
    recipe = SimpleNamespace(student=SimpleNamespace(layers=2, init="teacher-layers"),
                             task=SimpleNamespace(instruction="Summarize."))
    records = [{"input": "The museum opens a new wing.", "output": "A new wing opens."}]
    info = resolve_layers(recipe, teacher4, tok, records)
    assert info["method"] == "block-influence" and len(info["scores"]) == 4
    assert recipe.student.layers == sorted(sorted(range(4), key=lambda i: -info["scores"][i])[:2])
    listed = SimpleNamespace(student=SimpleNamespace(layers=[0, 3], init="teacher-layers"), task=recipe.task)
    assert resolve_layers(listed, teacher4, tok, records) is None and listed.student.layers == [0, 3]
