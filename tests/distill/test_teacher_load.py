"""Teacher loading options: bitsandbytes int8 / nf4 on CPU, and a clear error for a bad load_in."""

import pytest

from edgestill.distill.answers import answer_batch
from edgestill.distill.teacher import load_teacher
from edgestill.errors import UserError
from edgestill.recipe import load_recipe
from edgestill.tensors import chat_prompt, user_message
from tests.conftest import write_tiny_recipe


@pytest.mark.parametrize("load_in", ["int8", "nf4"])
def test_bitsandbytes_teacher_answers_on_cpu(tiny_llama_dir, load_in):
    pytest.importorskip("bitsandbytes")
    model, tok = load_teacher(str(tiny_llama_dir), load_in)
    assert any("bnb" in type(m).__module__ or "bitsandbytes" in type(m).__module__ for m in model.modules())
    prompts = [chat_prompt(tok, user_message("Summarize.", t)) for t in ("A short note.", "Another, longer note here.")]
    answers = answer_batch(model, tok, prompts, 5, 4)
    assert [a["topk_ids"].shape[1] for a in answers] == [4, 4]
    assert all(a["topk_ids"][:, 0].tolist() == a["target_ids"] for a in answers)


def test_unknown_load_in_is_refused_with_the_allowed_values(tmp_path, tiny_llama_dir):
    path = write_tiny_recipe(tmp_path, "q", tiny_llama_dir, ["a text"] * 3, teacher={"load_in": "int4"})
    with pytest.raises(UserError, match=r"teacher.load_in.*'nf4'"):
        load_recipe(path)


@pytest.mark.parametrize("load_in,limit", [("int8", 0.05), ("nf4", 0.25), ("bf16", 0.01)])
def test_a_student_from_a_quantized_or_bf16_teacher_gets_its_float_weights(tiny_llama_dir, load_in, limit):
    """The student copies what the teacher's layers compute with: bitsandbytes int8 / nf4 weights
    dequantized (their raw state is int8 codes or packed 4-bit bytes), bf16 widened; it is an fp32
    model with no quantization config, so that it trains and exports as a plain checkpoint."""
    import torch

    from edgestill.distill.student import make_student

    if load_in != "bf16":
        pytest.importorskip("bitsandbytes")
    reference, _ = load_teacher(str(tiny_llama_dir), "fp32")
    teacher, _ = load_teacher(str(tiny_llama_dir), load_in)
    student = make_student(teacher, [1])
    assert student.dtype == torch.float32 and not hasattr(student.config, "quantization_config")
    want, got = reference.state_dict(), student.state_dict()
    for name in ("self_attn.q_proj.weight", "mlp.down_proj.weight", "input_layernorm.weight"):
        w = want[f"model.layers.1.{name}"]
        err = float((got[f"model.layers.0.{name}"] - w).norm() / w.norm())
        assert err < limit, (name, err)


@pytest.mark.parametrize("write_in", ["bf16", "teacher"])
def test_inputs_are_sampled_by_the_model_write_inputs_in_names(tiny_llama_dir, write_in):
    """bf16: a bf16 copy of the fp32 teacher samples the inputs (what a bf16-loaded teacher samples);
    teacher: the teacher itself. Either way the teacher that answers stays fp32."""
    import torch

    from edgestill.distill.data import input_writer
    from edgestill.distill.inputs import local_writer
    from edgestill.recipe import Teacher

    model, tok = load_teacher(str(tiny_llama_dir))
    reference = load_teacher(str(tiny_llama_dir), "bf16" if write_in == "bf16" else "fp32")[0]
    conversations = [[{"role": "user", "content": f"Write a note about topic {i}."}] for i in range(3)]
    cfg = Teacher(source=str(tiny_llama_dir), write_inputs_in=write_in)
    texts = input_writer(cfg, model, tok, torch.device("cpu"))(conversations, 12, seed=5)
    assert texts == local_writer(reference, tok)(conversations, 12, seed=5)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
