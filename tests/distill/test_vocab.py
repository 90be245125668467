"""Vocabulary trimming on the real SmolLM2 tokenizer and a tiny model."""

import json

import numpy as np
import pytest
import torch

from edgestill.distill.prompts import STUDENT_CHAT_TEMPLATE
from edgestill.distill.vocab import (
    new_ids_strict,
    plan_trim,
    remap_ids,
    task_texts,
    trim_model,
    trimmed_tokenizer,
)
from edgestill.errors import UserError
from edgestill.tensors import chat_prompt, user_message

INSTRUCTION = "Summarize the following paragraph in one sentence."
RECORDS = [
    {"input": "The city council voted on Tuesday to expand the bike lane network by 40 kilometres.",
     "output": "The council approved 40 km of new bike lanes.", "prompt": None},
    {"input": "Researchers found that people who slept less than six hours were likelier to catch colds.",
     "output": "Short sleep makes colds more likely, researchers say.", "prompt": None},
    {"input": "Our support team will be unavailable on Friday; tickets will be answered on Monday morning.",
     "output": "Support is closed Friday and reopens Monday.", "prompt": None},
    {"input": "Le café « Chez Zoë » ouvre à 7 h — naïve façade, prix: 3,50 €. Tel. +33 1 23 45 67 89!",
     "output": "A café opens at 7.", "prompt": None,
     "rationale": "The text states the opening hour.\n\n\tIndented   spaces."},
]
UNSEEN = ("Quokkas zigzagged past xylophonists; 🦘🦘 naïveté, Straße, 東京, Ωmega, "
          "tabs\tand\r\nnew lines,    many spaces, <html attr='1'>, 0x7FFF_FFFF, ÿþ.")


@pytest.fixture(scope="module")
def full_tok(teacher_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(teacher_dir)
    tok.chat_template = STUDENT_CHAT_TEMPLATE
    return tok


@pytest.fixture(scope="module")
def texts(full_tok):
    records = [dict(r, prompt=chat_prompt(full_tok, user_message(INSTRUCTION, r["input"]))) for r in RECORDS]
    return task_texts(records)


@pytest.fixture(scope="module")
def keep(full_tok, texts):
    return plan_trim(full_tok, texts)


@pytest.fixture(scope="module")
def small_tok(full_tok, keep):
    return trimmed_tokenizer(full_tok, keep)


def test_task_texts_takes_every_text_field():
    out = task_texts([{"input": "a", "output": "b", "prompt": "c", "rationale": "d", "id": 3}, {"input": "e"}])
    assert out == ["a", "b", "c", "d", "e"]


def test_keep_holds_specials_bytes_and_task_tokens_only(full_tok, texts, keep):
    assert keep == sorted(set(keep))
    assert set(full_tok.all_special_ids) <= set(keep)
    assert {full_tok.convert_tokens_to_ids(t) for t in ("<|im_start|>", "<|im_end|>")} <= set(keep)
    single = [i for t, i in full_tok.get_vocab().items() if len(t) == 1]
    assert set(single) <= set(keep) and len(single) >= 200
    used = {i for ids in full_tok(texts, add_special_tokens=False)["input_ids"] for i in ids}
    assert used <= set(keep)
    assert len(keep) < len(full_tok) // 20  # a few hundred task tokens + ancestors, not 49k
    assert plan_trim(full_tok, texts, extra_ids=[40000])[-1] >= 40000


def test_common_merges_keep_frequent_words_whole(full_tok, texts, keep):
    """`common`: the first N merges' tokens stay, so a common word outside the training text is
    one token again, as in the teacher, while the text's own segmentation is unchanged."""
    wider = plan_trim(full_tok, texts, common=4000)
    assert set(keep) < set(wider) and len(wider) < len(full_tok) // 4
    small = trimmed_tokenizer(full_tok, wider)
    word = " weather"  # common English, absent from the training text
    assert all(word not in t for t in texts) and len(full_tok(word, add_special_tokens=False)["input_ids"]) == 1
    assert len(small(word, add_special_tokens=False)["input_ids"]) == 1
    assert len(trimmed_tokenizer(full_tok, keep)(word, add_special_tokens=False)["input_ids"]) > 1
    for text in texts:
        old = full_tok(text, add_special_tokens=False)["input_ids"]
        assert small(text, add_special_tokens=False)["input_ids"] == remap_ids(np.array(old), wider).tolist()


def test_task_texts_segment_identically_and_round_trip(full_tok, small_tok, texts, keep):
    for text in texts:
        old = full_tok(text, add_special_tokens=False)["input_ids"]
        new = small_tok(text, add_special_tokens=False)["input_ids"]
        assert new == remap_ids(np.array(old), keep).tolist()
        assert small_tok.decode(new) == text


def test_unseen_text_still_encodes_and_decodes_exactly(full_tok, small_tok):
    ids = small_tok(UNSEEN, add_special_tokens=False)["input_ids"]
    assert max(ids) < len(small_tok) and small_tok.decode(ids) == UNSEEN
    assert len(ids) > len(full_tok(UNSEEN, add_special_tokens=False)["input_ids"])  # shorter pieces


def test_specials_and_chat_template_survive_save_and_load(small_tok, full_tok, keep, texts, tmp_path):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    small_tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.special_tokens_map == full_tok.special_tokens_map
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        assert getattr(loaded, name) == keep.index(getattr(full_tok, name))
    msgs = [{"role": "user", "content": "hi"}]
    assert (loaded.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
            == full_tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False))
    raw = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))  # what export/runtime load
    assert raw.get_vocab_size() == len(keep)
    for text in texts + [UNSEEN]:
        expect = small_tok(text, add_special_tokens=False)["input_ids"]
        assert loaded(text, add_special_tokens=False)["input_ids"] == expect
        assert raw.encode(text, add_special_tokens=False).ids == expect
        assert raw.decode(expect, skip_special_tokens=False) == text
    spec = json.loads((tmp_path / "tokenizer.json").read_text())
    assert all(a["content"] == full_tok.convert_ids_to_tokens(keep[a["id"]]) for a in spec["added_tokens"])


def test_remap_ids_marks_dropped_tokens():
    keep = [0, 1, 2, 5, 9]
    old = np.array([[9, 5, 3], [0, 8, 2]])
    assert remap_ids(old, keep).tolist() == [[4, 3, -1], [0, -1, 2]]
    assert new_ids_strict([9, 0], keep) == [4, 0]
    with pytest.raises(UserError, match="trim_vocab.*3"):
        new_ids_strict([9, 3], keep, "answer tokens")


@pytest.mark.parametrize("tied", [True, False])
def test_trimmed_model_logits_equal_full_logits_at_kept_ids(tiny_llama_dir, full_tok, keep, texts, tied, tmp_path):
    import copy

    from transformers import AutoModelForCausalLM

    full = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, tie_word_embeddings=tied).eval()
    if not tied:
        with torch.no_grad():
            full.lm_head.weight.copy_(torch.randn_like(full.lm_head.weight))
    small = trim_model(copy.deepcopy(full), keep)
    old = full_tok(texts[2], add_special_tokens=False, return_tensors="pt")["input_ids"]
    new = torch.from_numpy(remap_ids(old.numpy(), keep))
    with torch.no_grad():
        expect = full(old).logits[..., keep]
        got = small(new).logits
    assert got.shape[-1] == len(keep) == small.config.vocab_size
    assert torch.allclose(got, expect, atol=1e-5)
    assert (small.lm_head.weight is small.model.embed_tokens.weight) == tied
    assert small.config.eos_token_id == keep.index(full.config.eos_token_id)
    small.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.allclose(again(new).logits, got, atol=1e-6)


def test_trim_model_refuses_to_drop_the_eos_token(tiny_llama_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    with pytest.raises(UserError, match="eos_token_id"):
        trim_model(model, [0, 1, 3, 4])
    assert model.config.vocab_size == model.get_input_embeddings().weight.shape[0] > 4  # untouched


@pytest.mark.slow
def test_onnxruntime_genai_loads_the_trimmed_tokenizer(fp32_bundle, small_tok, texts, tmp_path):
    import shutil

    og = pytest.importorskip("onnxruntime_genai")
    bundle = tmp_path / "bundle"
    shutil.copytree(fp32_bundle, bundle)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (bundle / name).unlink()
    small_tok.save_pretrained(bundle)
    og_tok = og.Tokenizer(og.Model(og.Config(str(bundle))))
    for text in texts + [UNSEEN]:
        ids = list(og_tok.encode(text))
        assert ids == small_tok(text, add_special_tokens=False)["input_ids"]
        plain = text.replace("<|im_start|>", "").replace("<|im_end|>", "")  # genai skips specials
        assert og_tok.decode(ids) == plain
