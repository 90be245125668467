"""distill.evaluate.evaluate on the tiny model: the quality keys, and exact match that ignores
case, punctuation and spacing (as ROUGE-L's word tokens do)."""

from types import SimpleNamespace

import pytest

from edgestill.distill.evaluate import evaluate, greedy_answers
from tests.distill.forced import forced_examples

INSTRUCTION = "Classify the review as positive or negative."
TEXTS = ["The soup was cold and far too salty.", "Friendly staff and a spotless room.",
         "The app crashes every time I open it.", "Lovely garden, we will visit again."]


def test_exact_match_and_label_scores_normalise_case_and_punctuation(tiny):
    model, tok = tiny
    answers = greedy_answers(model, tok, TEXTS, INSTRUCTION, max_new_tokens=6)
    assert all(a.strip() for a in answers), answers
    # the teacher's text: the model's own answers in capitals with a full stop; labels: its answers
    # for the first two texts only, so the rates are 2/4 and the teacher's own rates 2/4 as well
    records = [{"input": t, "output": a.upper() + ".", "label": a if i < 2 else "something else"}
               for i, (t, a) in enumerate(zip(TEXTS, answers))]
    examples = forced_examples(tok, INSTRUCTION, TEXTS, answers)
    task = SimpleNamespace(instruction=INSTRUCTION, max_output_tokens=6, labels=[], fields=[])
    quality = evaluate(model, tok, records, examples, task)["quality"]
    assert quality["rouge_l_vs_teacher"] == 1.0
    assert quality["exact_match_vs_teacher"] == 1.0  # raw strings differ in case and the full stop
    assert quality["exact_match_vs_label"] == pytest.approx(0.5)
    assert quality["teacher_exact_match_vs_label"] == pytest.approx(0.5)
    assert quality["rouge_l_vs_label"] == quality["teacher_rouge_l_vs_label"] < 1.0
    # new words: the first two answers are their labels (none new); the others' words outside their
    # input and "something else" count; the teacher's capitals and full stop change no word
    from edgestill.metrics import words
    outside = [0.0, 0.0] + [sum(w not in set(words(t)) | {"something", "else"} for w in words(a)) / len(words(a))
                            for t, a in zip(TEXTS[2:], answers[2:])]
    assert quality["novel_word_share"] == pytest.approx(sum(outside) / 4, abs=1e-4)
    assert quality["teacher_novel_word_share"] == quality["novel_word_share"]


def test_copy_bias_keeps_answers_to_the_inputs_tokens(tiny):
    """`task.copy_bias` in the distill evaluation: a large bias keeps every answer token among the
    input's own tokens (as the runtime does); 0 leaves the answers as they were."""
    import torch
    from transformers import LogitsProcessorList

    from edgestill.distill.copy_bias import CopyBias, copy_token_ids
    from edgestill.tensors import chat_prompt, user_message

    model, tok = tiny
    plain = greedy_answers(model, tok, TEXTS, INSTRUCTION, max_new_tokens=8)
    assert greedy_answers(model, tok, TEXTS, INSTRUCTION, max_new_tokens=8, copy_bias=0.0) == plain
    biased = greedy_answers(model, tok, TEXTS, INSTRUCTION, max_new_tokens=8, copy_bias=50.0)
    assert biased != plain
    favoured = copy_token_ids(tok, TEXTS[0])
    assert favoured and not set(favoured) & set(tok.all_special_ids)
    ids = tok(chat_prompt(tok, user_message(INSTRUCTION, TEXTS[0])), return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id,
                             eos_token_id=tok.eos_token_id, logits_processor=LogitsProcessorList([CopyBias([favoured], 50.0)]))
    new = out[0, ids["input_ids"].shape[1]:].tolist()
    assert set(new) - {tok.eos_token_id} <= set(favoured)
    assert tok.decode(new, skip_special_tokens=True).strip() == biased[0]


def test_task_shape_carries_the_copy_bias():
    from edgestill.export.bundle import ExportSettings, task_shape

    assert task_shape(ExportSettings("Summarize.", ("a",))) == {}
    assert task_shape(ExportSettings("Summarize.", ("a",), copy_bias=2.0)) == {"copy_bias": 2.0}
