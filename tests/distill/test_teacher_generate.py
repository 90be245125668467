"""distill.generate: shared-prefix batched generation gives what one prompt alone would give."""

import random

import pytest
import torch

from edgestill.distill.generate import (
    buffered_cache,
    common_prefix_len,
    greedy_topk,
    newline_counts,
    paragraph_stop,
    sample,
)
from edgestill.distill.prompts import (
    chat_messages_prompt,
    input_generation_messages,
    pick_shown,
)
from edgestill.recipe import Example, Task
from edgestill.tensors import chat_prompt, user_message

TEXTS = ["The bakery on Main Street now opens at six.",
         "A storm closed the mountain road for two days, and the town ran short of bread and milk.",
         "Tickets sold out."]


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval(), AutoTokenizer.from_pretrained(tiny_llama_dir)


def test_common_prefix_len():
    assert common_prefix_len([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert common_prefix_len([[7, 1], [8, 1]]) == 0
    assert common_prefix_len([[1, 2, 3], [1, 2, 3]]) == 2  # at least one token left to run per row


@torch.inference_mode()
def test_buffered_cache_matches_transformers_dynamic_cache(tiny):
    """Prefix repeated over rows, growth past the capacity, rows dropped: the same logits as DynamicCache."""
    from transformers import DynamicCache

    model, _ = tiny
    prefix, rows = torch.tensor([[5, 17, 99, 3]]), torch.tensor([[7], [8], [9]])
    caches = {"buffered": buffered_cache(model, capacity=2), "dynamic": DynamicCache(config=model.config)}
    got = {}
    for name, cache in caches.items():
        model(input_ids=prefix, past_key_values=cache, use_cache=True)
        cache.batch_repeat_interleave(3)
        steps, ids, keep = [], rows, torch.arange(3)
        for step in range(4):
            n = cache.get_seq_length()
            pos = torch.full((len(ids), 1), n)
            out = model(input_ids=ids, position_ids=pos, past_key_values=cache, use_cache=True).logits[:, -1]
            steps.append(out)
            ids = out.argmax(-1, keepdim=True)
            if step == 1:  # drop the middle row, as decode() does when rows finish
                keep = torch.tensor([0, 2])
                cache.batch_select_indices(keep)
                ids = ids[keep]
        got[name] = steps
    assert caches["buffered"].get_seq_length() == caches["dynamic"].get_seq_length() == 8
    assert {type(layer).__name__ for layer in caches["buffered"].layers} == {"BufferedLayer"}
    for a, b in zip(got["buffered"], got["dynamic"]):
        assert torch.allclose(a, b, atol=1e-5)


def test_greedy_topk_matches_one_prompt_at_a_time(tiny):
    model, tok = tiny
    prompts = [chat_prompt(tok, user_message("Summarize in one sentence.", t)) for t in TEXTS]
    got = greedy_topk(model, tok, prompts, 7, 5, {tok.eos_token_id})
    for prompt, answer in zip(prompts, got):
        ids = tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            want = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=7, do_sample=False,
                                  eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)[0, ids.shape[1]:]
            full = torch.cat([ids[0], want])[None]
            logp = torch.log_softmax(model(full).logits[0, ids.shape[1] - 1:-1].float(), dim=-1)
        assert answer["tokens"] == want.tolist()
        assert answer["topk_ids"].shape == (len(want), 5)
        assert answer["topk_ids"][:, 0].tolist() == want.tolist()
        ref = logp.topk(5, dim=-1).values.numpy()
        assert abs(answer["topk_logp"] - ref).max() < 1e-4


def test_teacher_copy_bias_answers_from_the_input(tiny):
    """`task.copy_bias` on the teacher: a large bonus keeps every answer token among the input's own
    tokens, the greedy token stays the top-1 of the stored (biased) log-probs, and the local answerer
    applies it only when the task asks for it."""
    from types import SimpleNamespace

    from edgestill.distill.answers import local_answerer
    from edgestill.distill.copy_bias import copy_token_ids

    model, tok = tiny
    prompts = [chat_prompt(tok, user_message("Summarize in one sentence.", t)) for t in TEXTS]
    copies = [copy_token_ids(tok, t) for t in TEXTS]
    plain = greedy_topk(model, tok, prompts, 7, 5, {tok.eos_token_id})
    biased = greedy_topk(model, tok, prompts, 7, 5, {tok.eos_token_id}, copies, 50.0)
    assert [a["tokens"] for a in biased] != [a["tokens"] for a in plain]
    for answer, ids in zip(biased, copies):
        assert set(answer["tokens"]) - {tok.eos_token_id} <= set(ids)
        assert answer["topk_ids"][:, 0].tolist() == answer["tokens"]
    task = SimpleNamespace(instruction="Summarize in one sentence.", copy_bias=50.0)
    messages = [user_message(task.instruction, t) for t in TEXTS]
    assert [a["target_ids"] for a in local_answerer(model, tok, task)(messages, 7, 5)] == \
        [a["tokens"] for a in biased]
    assert [a["target_ids"] for a in local_answerer(model, tok)(messages, 7, 5)] == [a["tokens"] for a in plain]


def test_sample_is_seeded_and_varies(tiny):
    model, tok = tiny
    prompts = [chat_prompt(tok, "Write a text about " + t) for t in ("cats", "dogs", "birds")]
    stop, newlines = {tok.eos_token_id}, newline_counts(tok)
    a = sample(model, tok, prompts, 10, seed=1, stop_ids=stop, newlines=newlines)
    b = sample(model, tok, prompts, 10, seed=1, stop_ids=stop, newlines=newlines)
    c = sample(model, tok, prompts, 10, seed=2, stop_ids=stop, newlines=newlines)
    assert a == b and len(a) == 3
    assert a != c


def test_paragraph_stop_waits_for_a_blank_line_after_the_minimum():
    newlines = {10: 1, 11: 2}
    done = paragraph_stop({0}, newlines, min_tokens=4)
    assert done([5, 0])                    # end token
    assert not done([5, 11])               # blank line too early: a preamble may precede the text
    assert done([5, 5, 5, 11])             # one token holding two newlines
    assert done([5, 5, 10, 10])            # two newline tokens in a row
    assert not done([5, 5, 5, 10])


def test_input_messages_show_seeds_as_assistant_turns_and_share_a_prefix(tiny):
    _, tok = tiny
    task = Task(instruction="Summarize.", seed_examples=[Example(t, "x") for t in TEXTS], topics=["cats", "the sea"])
    rng = random.Random(0)
    shown = pick_shown(task, rng)
    convs = [input_generation_messages(task, rng, shown) for _ in range(6)]
    assert [m["content"] for m in convs[0] if m["role"] == "assistant"] == [ex.input for ex in shown]
    assert {c[-1]["content"] for c in convs} == {"Write another one, about cats.", "Write another one, about the sea."}
    ids = [tok(chat_messages_prompt(tok, c), add_special_tokens=False)["input_ids"] for c in convs]
    shared = common_prefix_len(ids)
    assert shared >= len(tok(chat_messages_prompt(tok, convs[0][:-1]), add_special_tokens=False)["input_ids"]) - 2
    assert convs[0][0]["content"].startswith("Write a short text like the ones this task takes as input")
    task.input_request = "a short note about an outing, with its day and place"  # names the kind of text
    asked = input_generation_messages(task, random.Random(0), shown)
    assert asked[0]["content"] == "Write a short note about an outing, with its day and place."
    assert [m["content"] for m in asked[1:-1]] == [m["content"] for m in convs[0][1:-1]]


def test_rationale_pass_stores_text_ids_and_topk_rows(tiny, tmp_path, tiny_llama_dir):
    from edgestill.distill.answers import prepare_answers
    from edgestill.distill.inputs import prepare_inputs
    from edgestill.distill.topk import TopkStore
    from edgestill.recipe import load_recipe
    from tests.conftest import write_tiny_recipe

    model, tok = tiny
    texts = [f"Item {i}: the shop sold {i * 3} lamps and {i} chairs on day {i}." for i in range(6)]
    recipe = load_recipe(write_tiny_recipe(tmp_path, "why", tiny_llama_dir, texts,
                                           task={"n_train": 4, "n_eval": 2, "max_output_tokens": 4, "rationale": True},
                                           teacher={"batch_size": 4}, distill={"loss": {"top_k": 4}}))
    data = tmp_path / "data"
    records = prepare_answers(recipe, data, prepare_inputs(recipe, data, model, tok), model, tok, "tiny")
    store = TopkStore(data, 4, len(tok))
    for r in records:
        assert isinstance(r["rationale"], str) and 1 <= r["rationale_topk_len"] == len(r["rationale_ids"]) <= 8
        ids, _ = store.read(r["rationale_topk_offset"], r["rationale_topk_len"])
        assert ids[:, 0].tolist() == r["rationale_ids"]
    assert store.rows() == sum(r["topk_len"] + r["rationale_topk_len"] for r in records)
    again = prepare_answers(recipe, data, prepare_inputs(recipe, data, model, tok), model, tok, "tiny")
    assert again == records and store.rows() == sum(r["topk_len"] + r["rationale_topk_len"] for r in records)
