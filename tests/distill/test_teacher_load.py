"""Teacher loading options: bitsandbytes int8 / nf4 on CPU, and a clear error for a bad load_in."""

import pytest

from distill.answers import answer_batch
from distill.prompts import chat_prompt, user_message
from distill.teacher import load_teacher
from edgestill.errors import UserError
from edgestill.recipe import load_recipe
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
