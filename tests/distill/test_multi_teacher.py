"""Several teachers (`teacher.sources`): round robin and averaged top-k, on two tiny local teachers."""

from __future__ import annotations

import numpy as np
import pytest

from edgestill.distill.data import teacher_data
from edgestill.distill.multi_teacher import average_topk, averaged, forced_topk
from edgestill.distill.open_teacher import OpenTeacher
from edgestill.distill.topk import TopkStore
from edgestill.errors import UserError
from edgestill.recipe import load_recipe
from tests.conftest import make_tiny_llama, write_tiny_recipe

TEXTS = [f"Log {i}: the ferry left pier {i} at {i + 6} o'clock with {i * 11} passengers aboard." for i in range(6)]


@pytest.fixture(scope="module")
def second_dir(tmp_path_factory, teacher_dir):
    """Another random tiny Llama (seed 1) with the same tokenizer as `tiny_llama_dir`."""
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama-2"), teacher_dir, seed=1)


def recipe_with(tmp_path, first, second, combine, alpha=0.5):
    return load_recipe(write_tiny_recipe(
        tmp_path, "multi", first, TEXTS, task={"n_train": 4, "n_eval": 2, "max_output_tokens": 5},
        teacher={"batch_size": 3, "sources": [{"source": str(second)}], "combine": combine},
        distill={"loss": {"alpha": alpha, "top_k": 4}}))


def alone(tmp_path, source):
    """The records of `source` as the only teacher (same inputs)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    recipe = load_recipe(write_tiny_recipe(tmp_path, "one", source, TEXTS,
                                           task={"n_train": 4, "n_eval": 2, "max_output_tokens": 5},
                                           teacher={"batch_size": 3}, distill={"loss": {"top_k": 4}}))
    return teacher_data(recipe, tmp_path / "data").records


def test_round_robin_asks_each_teacher_in_turn(tmp_path, tiny_llama_dir, second_dir):
    data = teacher_data(recipe_with(tmp_path, tiny_llama_dir, second_dir, "round_robin"), tmp_path / "data")
    first, second = alone(tmp_path / "a", tiny_llama_dir), alone(tmp_path / "b", second_dir)
    assert [r["teacher"] for r in data.records] == [str(tiny_llama_dir), str(second_dir)] * 3
    for r in data.records:
        solo = (first if r["id"] % 2 == 0 else second)[r["id"]]
        assert r["target_ids"] == solo["target_ids"] and r["output"] == solo["output"]
    assert [t["source"] for t in data.info["teachers"]] == [str(tiny_llama_dir), str(second_dir)]
    assert data.model.config is not None and data.info["combine"] == "round_robin"


def test_average_keeps_first_answer_and_mixes_both_top_k(tmp_path, tiny_llama_dir, second_dir):
    data = teacher_data(recipe_with(tmp_path, tiny_llama_dir, second_dir, "average"), tmp_path / "data")
    first = alone(tmp_path / "a", tiny_llama_dir)
    store, solo_store = TopkStore(tmp_path / "data", 4, len(data.tokenizer)), TopkStore(tmp_path / "a" / "data", 4, len(data.tokenizer))
    changed = 0
    for r, solo in zip(data.records, first):
        assert r["target_ids"] == solo["target_ids"] and r["teacher"].startswith("avg(")
        ids, logp = store.read(r["topk_offset"], r["topk_len"])
        solo_ids, _ = solo_store.read(solo["topk_offset"], solo["topk_len"])
        assert np.all(np.exp(logp).sum(-1) <= 1.0 + 1e-3) and np.all(np.diff(logp, axis=-1) <= 1e-3)
        changed += not np.array_equal(ids, solo_ids)
    assert changed > 0  # a different random teacher moves the top-k


def test_forced_top_k_matches_the_teachers_own_greedy_rows(tmp_path, tiny_llama_dir):
    from edgestill.distill.teacher import load_teacher

    records = alone(tmp_path, tiny_llama_dir)
    model, tok = load_teacher(str(tiny_llama_dir))
    store = TopkStore(tmp_path / "data", 4, len(tok))
    r = records[0]
    ids, logp = forced_topk(model, tok, r["prompt"], r["target_ids"], 4)
    stored_ids, stored_logp = store.read(r["topk_offset"], r["topk_len"])
    assert ids[:, 0].tolist() == stored_ids[:, 0].tolist() == r["target_ids"]
    np.testing.assert_allclose(logp, stored_logp, atol=2e-2)  # stored in float16


def test_average_topk_golden_values():
    a = (np.array([[1, 2]]), np.log(np.array([[0.6, 0.3]], dtype=np.float32)))
    b = (np.array([[2, 3]]), np.log(np.array([[0.5, 0.4]], dtype=np.float32)))
    ids, logp = average_topk([a, b], 2)
    assert ids.tolist() == [[2, 1]]
    np.testing.assert_allclose(np.exp(logp), [[0.4, 0.3]], rtol=1e-5)


def test_average_needs_local_weights_and_round_robin_a_shared_vocabulary(tmp_path, tiny_llama_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    remote = OpenTeacher("openai:x", tok, None, write=None, answer=None, targets="sequence")
    local = OpenTeacher("local", tok, object(), write=None, answer=None)
    with pytest.raises(UserError, match="average needs every teacher's weights locally.*openai:x"):
        averaged([local, remote])
    from edgestill.distill.multi_teacher import round_robin

    local = OpenTeacher("local", tok, None, write=None, answer=None)
    recipe = recipe_with(tmp_path, tiny_llama_dir, tiny_llama_dir, "round_robin", alpha=0.5)
    with pytest.raises(UserError, match="openai:x returns no usable log-probs.*alpha=1"):
        round_robin(recipe, [local, remote], [])
    round_robin(load_recipe(recipe.path, ["distill.loss.alpha=1.0"]), [local, remote], [])  # sequence-level: fine


def test_recipe_checks_each_extra_teacher(tmp_path, tiny_llama_dir):
    with pytest.raises(UserError, match=r"teacher.sources\[0\].*not a bundled teacher"):
        recipe_with(tmp_path, tiny_llama_dir, tmp_path / "missing", "round_robin")
    with pytest.raises(UserError, match=r"teacher.sources\[0\]: teacher.base_url"):
        load_recipe(write_tiny_recipe(tmp_path, "m", tiny_llama_dir, TEXTS,
                                      teacher={"sources": [{"source": "openai", "model": "m"}]}))
