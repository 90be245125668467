"""A fields task on the tiny model: the teacher answers one JSON object through constrained decoding
with the seeds shown few-shot (verbatim: every value a span of the input), its top-k follows those
tokens, invalid or invented answers are kept out of training, the report scores against the labels,
the exported bundle carries the fields and the verbatim flag, and teacher_noise is skipped."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from edgestill.distill.fields import extract, fields_answerer, valid_answers
from edgestill.distill.sensitivity import teacher_noise
from edgestill.errors import UserError
from edgestill.files import read_jsonl
from edgestill.recipe import Example
from edgestill.tensors import input_of
from tests.conftest import write_tiny_recipe

FIELDS = ["day", "time", "place"]
TEXTS = [f"Meet {who} at the {where} on {day} at {time}, bring snacks." for who, where, day, time in [
    ("Ann", "library", "Monday", "noon"), ("Bo", "park", "Tuesday", "9 am"), ("Cy", "cafe", "Friday", "7 pm"),
    ("Di", "gym", "Sunday", "6:30"), ("Ed", "pool", "Saturday", "10 am"), ("Flo", "office", "Thursday", "3pm"),
    ("Gus", "museum", "Wednesday", "11:15"), ("Hal", "station", "tomorrow", "8 pm"),
    ("Ivy", "bakery", "Monday", "5 am"), ("Jo", "market", "Friday", "2 pm"), ("Kai", "beach", "Sunday", "4pm"),
    ("Lu", "club", "Tuesday", "9:45")]]
SEEDS = [{"input": TEXTS[0], "output": json.dumps({"day": "Monday", "time": "noon", "place": "the library"})},
         {"input": TEXTS[1], "output": json.dumps({"day": "Tuesday", "time": "9 am", "place": "the park"})}]


def test_teacher_answers_parse_and_keep_the_few_shot_prompt(tiny):
    model, tok = tiny
    task = SimpleNamespace(instruction="Extract the event.", fields=FIELDS,
                           seed_examples=[Example(**s) for s in SEEDS])
    answers = fields_answerer(model, tok, task, tok.eos_token_id)(["Extract the event.\n\n" + TEXTS[2]], 40, 8)
    [a] = answers
    assert SEEDS[1]["output"] in a["prompt"] and a["prompt"].count("Extract the event.") == 3
    assert a["topk_ids"].shape == (len(a["target_ids"]), 8) and np.isfinite(a["topk_logp"]).all()
    if a["ended"]:
        assert a["target_ids"][-1] == tok.eos_token_id and list(json.loads(a["output"])) == FIELDS
    assert all(list(json.loads(x)) == FIELDS for x in extract(model, tok, TEXTS[:3], FIELDS, max_new_tokens=12))


def spans_only(text: str, source: str) -> bool:
    return all(v is None or (v and v in source) for v in json.loads(text).values())


def test_verbatim_teacher_and_evaluation_copy_spans_of_the_input(tiny):
    """The random tiny model invents values when free; verbatim, every value is a span of the
    message's input (not of the instruction or the seeds), for the teacher and in evaluation."""
    model, tok = tiny
    seeds = [Example(**s) for s in SEEDS]
    free = SimpleNamespace(instruction="Extract the event.", fields=FIELDS, seed_examples=seeds, verbatim=False)
    copying = SimpleNamespace(**{**vars(free), "verbatim": True})
    messages = [f"Extract the event.\n\n{t}" for t in TEXTS[2:6]]
    assert [input_of(copying, m) for m in messages] == TEXTS[2:6]
    answers = fields_answerer(model, tok, copying, tok.eos_token_id)(messages, 40, 4)
    assert all(a["ended"] and spans_only(a["output"], t) for a, t in zip(answers, TEXTS[2:6]))
    assert valid_answers([{"input": t, "output": a["output"], "ended": True} for a, t in zip(answers, TEXTS[2:6])],
                         FIELDS)[1] == {"invalid_json": 0, "not_in_input": 0}
    invented = fields_answerer(model, tok, free, tok.eos_token_id)(messages, 40, 4)
    assert not all(a["ended"] and spans_only(a["output"], t) for a, t in zip(invented, TEXTS[2:6]))
    texts = extract(model, tok, messages, FIELDS, max_new_tokens=12, sources=TEXTS[2:6])  # cut short too
    assert all(list(json.loads(x)) == FIELDS and spans_only(x, t) for x, t in zip(texts, TEXTS[2:6]))


def test_the_bundle_manifest_carries_verbatim(fp32_bundle, tmp_path):
    """export writes task {"fields", "verbatim"}; the runtime reads it back; an existing bundle of
    another task shape is not taken as up to date."""
    import shutil

    from edgestill.export.bundle import ExportSettings, existing_bundle, task_shape
    from edgestill.export.manifest import write_manifest
    from edgestill.export.quantize import preset
    from edgestill.runtime import Bundle

    settings = ExportSettings("Extract the event.", (TEXTS[0],), fields=tuple(FIELDS), verbatim=True)
    assert task_shape(settings) == {"fields": FIELDS, "verbatim": True}
    out = tmp_path / "bundle"
    shutil.copytree(fp32_bundle, out)
    manifest = json.loads((out / "manifest.json").read_text())
    header = ("format", "format_version", "tool_version", "files")
    write_manifest(out, {**{k: v for k, v in manifest.items() if k not in header}, "task": task_shape(settings)})
    bundle = Bundle.open(out)  # checksums verified
    assert bundle.fields == FIELDS and bundle.verbatim is True and Bundle.open(fp32_bundle).verbatim is False
    fingerprint = bundle.manifest["source"]["fingerprint"]
    chosen = preset("fp32")
    assert existing_bundle(out, chosen, fingerprint, False, task_shape(settings))["task"]["verbatim"] is True
    with pytest.raises(UserError, match="manifest task"):
        existing_bundle(out, chosen, fingerprint, False, {"fields": FIELDS, "verbatim": False})


def test_teacher_noise_is_skipped_for_a_fields_task(tiny):
    model, tok = tiny
    recipe = SimpleNamespace(task=SimpleNamespace(fields=FIELDS), distill=SimpleNamespace(teacher_noise=[0.01], seed=0),
                             teacher=SimpleNamespace(source="local-folder", sources=[], combine="round_robin"))
    records = [{"input": TEXTS[0], "output": SEEDS[0]["output"]}]
    result = teacher_noise(model, tok, records, lambda: pytest.fail("no examples needed when skipped"), recipe)
    assert "fields task" in result["skipped"] and "runs" not in result


def test_the_training_filter_counts_what_it_drops():
    records = [{"id": 0, "input": TEXTS[2], "ended": True, "output": '{"day": "Friday", "time": "7 pm", "place": "cafe"}'},
               {"id": 1, "input": TEXTS[2], "ended": True, "output": '{"day": "Friday", "time": "7pm", "place": null}'},
               {"id": 2, "input": TEXTS[2], "ended": False, "output": '{"day": "Friday", "time": "7 pm", "pla'},
               {"id": 3, "input": TEXTS[2], "ended": True, "output": '{"day": "Friday", "time": "7 pm"}'},
               {"id": 4, "input": TEXTS[2], "ended": True, "output": '{"day": null, "time": "", "place": null}'}]
    kept, dropped = valid_answers(records, FIELDS)
    assert [r["id"] for r in kept] == [0, 4] and dropped == {"invalid_json": 2, "not_in_input": 1}


def test_distinct_values_drops_answers_that_copy_one_span_into_two_fields():
    text = "Dinner at Rosa's Cafe on Friday at 7 pm."
    answers = ['{"day": "Friday", "time": "7 pm", "place": "Rosa\'s Cafe"}',
               '{"day": "Friday", "time": "Friday", "place": "Rosa\'s Cafe"}',            # one span, two fields
               '{"day": "Friday", "time": "7 pm", "place": "Rosa\'s Cafe on Friday"}',     # a span inside another
               '{"day": null, "time": null, "place": "Rosa\'s Cafe"}']
    records = [{"id": i, "input": text, "ended": True, "output": a} for i, a in enumerate(answers)]
    kept, dropped = valid_answers(records, FIELDS, distinct=True)
    assert [r["id"] for r in kept] == [0, 3]
    assert dropped == {"invalid_json": 0, "not_in_input": 0, "overlapping_values": 2}
    assert len(valid_answers(records, FIELDS)[0]) == 4  # the rule is the recipe's choice (task.distinct_values)


def fields_recipe(tmp_path, teacher):
    eval_file = tmp_path / "events.jsonl"
    eval_file.write_text("".join(json.dumps({"input": f"Tea at {p} on {d} at {t}.", "output": json.dumps(
        {"day": d, "time": t, "place": p})}) + "\n" for p, d, t in [("home", "Monday", "4"), ("Mo's", "Friday", "noon")]))
    return write_tiny_recipe(
        tmp_path, "ev", teacher, TEXTS, device="cpu",
        task={"instruction": "Extract the event.", "fields": FIELDS, "eval_labels": "events.jsonl",
              "seed_examples": SEEDS, "n_train": 10, "n_eval": 2, "max_output_tokens": 40},
        teacher={"batch_size": 4}, student={"layers": [0, 1]},
        distill={"steps": 4, "batch_size": 4, "lr": 1.0e-3, "warmup_steps": 1, "baselines": ["init"],
                 "loss": {"top_k": 8}})


def run(*args):
    return subprocess.run([sys.executable, "-m", "edgestill.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=900)


def quoting_teacher(out, tiny_llama_dir):
    """The tiny model made to prefer the quote token wherever it may stand (one residual dimension
    carries it to the logits), so its constrained answer is always {"day": "", ...}: empty values,
    which every input holds, so no answer is dropped and the run is deterministic."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tok = AutoModelForCausalLM.from_pretrained(tiny_llama_dir), AutoTokenizer.from_pretrained(tiny_llama_dir)
    with torch.no_grad():
        embed = model.model.embed_tokens.weight  # tied to the LM head
        embed[:, 0] = 1.0
        embed[tok.convert_tokens_to_ids('"'), 0] = 10.0
        model.model.norm.weight.zero_()
        model.model.norm.weight[0] = 1.0
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


EMPTY = json.dumps(dict.fromkeys(FIELDS, ""))


@pytest.mark.slow
def test_fields_task_end_to_end(tmp_path, tiny_llama_dir):
    recipe = fields_recipe(tmp_path, quoting_teacher(tmp_path / "teacher", tiny_llama_dir))
    done = run("distill", recipe, "--build-root", tmp_path / "build")
    assert done.returncode == 0, done.stderr[-3000:]
    records = read_jsonl(tmp_path / "build" / "ev" / "data" / "teacher.jsonl")
    assert records and all(r["output"] == EMPTY and r["ended"] for r in records)
    assert all(SEEDS[1]["output"] in r["prompt"] for r in records)  # the teacher saw the seeds
    report = json.loads((tmp_path / "build" / "ev" / "student" / "distill_report.json").read_text())
    q = report["quality"]
    assert report["task"]["fields"] == FIELDS and report["data"]["dropped"] == {"invalid_json": 0, "not_in_input": 0}
    assert q["json_valid"] == 1.0 and q["json_valid_ci95"] == [1.0, 1.0] and q["teacher_json_valid"] == 1.0
    assert q["teacher_exact_match_vs_label"] == 0.0 and q["teacher_field_f1_vs_label"] == 0.0  # empty values
    assert 0.0 <= q["field_f1_vs_label_ci95"][0] <= q["field_f1_vs_label"] <= q["field_f1_vs_label_ci95"][1] <= 1.0
    assert len(report["per_example"]["correct_vs_label"]) == 2
    assert {"exact_match_vs_label", "field_f1_vs_label"} <= set(report["comparisons"]["init"])
    assert all(list(json.loads(e["student"])) == FIELDS for e in report["examples"])

    done = run("export", recipe, "--build-root", tmp_path / "build", "export.precisions=[fp32]")
    assert done.returncode in (0, 1), done.stderr[-3000:]
    from edgestill.runtime import Bundle, Generator

    bundle = Bundle.open(tmp_path / "build" / "ev" / "bundle-fp32")
    assert bundle.manifest["task"] == {"fields": FIELDS, "verbatim": False}
    assert bundle.fields == FIELDS and Bundle.open(tmp_path / "build" / "ev" / "teacher-bundle-fp32").fields == FIELDS
    teacher = Generator(Bundle.open(tmp_path / "build" / "ev" / "teacher-bundle-fp32"), threads=1)
    assert teacher.extract("Tea at home on Monday at 4.") == dict.fromkeys(FIELDS, "")  # as in PyTorch
    assert list(Generator(bundle, threads=1).extract("Tea at home on Monday at 4.")) == FIELDS
