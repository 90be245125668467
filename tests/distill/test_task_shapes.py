"""A label task's recipe: its label set, seeds and labelled file are checked when it loads, each
mistake one line naming the key, file or record (edgestill/task_shapes.py); a fields task's too,
with `task.verbatim`; and the shortest teacher-written input follows the seeds (distill/inputs.py)."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgestill.errors import UserError
from edgestill.recipe import load_recipe

EVENTS = Path(__file__).resolve().parents[2] / "recipes" / "events.yaml"
LABELLED = textwrap.dedent("""\
    name: t
    task:
      instruction: "Positive or negative?"
      labels: [positive, negative]
      seed_examples: [{input: "Great.", output: positive}, {input: "Awful.", output: negative}]
    """)


def write(tmp_path, text, labels_file=None):
    if labels_file is not None:
        (tmp_path / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in labels_file))
        text += "  eval_labels: labels.jsonl\n"
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def test_a_label_task_loads(tmp_path):
    recipe = load_recipe(write(tmp_path, LABELLED, [{"input": "Nice.", "output": "positive"}]))
    assert recipe.task.labels == ["positive", "negative"]


@pytest.mark.parametrize("text, labels_file, words", [
    (LABELLED.replace("[positive, negative]", "[positive]"), None, ["task.labels", "at least two"]),
    (LABELLED.replace("[positive, negative]", "[positive, positive]"), None, ["task.labels", "different"]),
    (LABELLED.replace("[positive, negative]", "[positive, '']"), None, ["task.labels", "non-empty"]),
    (LABELLED.replace("output: negative", "output: meh"), None, ["task.seed_examples[2]", "'meh'", "task.labels"]),
    (LABELLED + "  rationale: true\n", None, ["task.rationale", "false"]),
    (LABELLED + "  label_request: a short customer review\n", None, ["task.label_request", "{label}"]),
    (LABELLED + "  label_request: a {label} {kind} review\n", None, ["task.label_request", "{label}"]),
    (LABELLED.replace("  labels: [positive, negative]\n", "").replace(", output: positive}", ", output: fine}").replace(
        ", output: negative}", ", output: poor}") + "  label_request: a {label} review\n", None,
     ["task.label_request", "label task only"]),
    (LABELLED, [{"input": "a", "output": "positive"}, {"input": "b", "output": "neutral"}],
     ["labels.jsonl", "record 2", "'neutral'", "task.labels"]),
])
def test_bad_label_tasks_are_one_line_errors(tmp_path, text, labels_file, words):
    with pytest.raises(UserError) as err:
        load_recipe(write(tmp_path, text, labels_file))
    for word in words:
        assert word in str(err.value)


def test_cli_exit_2_without_traceback(tmp_path):
    path = write(tmp_path, LABELLED, [{"input": "b", "output": "neutral"}])
    done = subprocess.run([sys.executable, "-m", "edgestill.recipe", str(path)], capture_output=True, text=True)
    assert done.returncode == 2 and "neutral" in done.stderr and "Traceback" not in done.stderr


FIELDED = textwrap.dedent("""\
    name: t
    task:
      instruction: "Extract the event."
      fields: [day, time]
      seed_examples:
        - {input: "Lunch Friday at noon.", output: '{"day": "Friday", "time": "noon"}'}
        - {input: "Call me later.", output: '{"day": null, "time": "later"}'}
    """)


def test_a_fields_task_loads(tmp_path):
    recipe = load_recipe(write(tmp_path, FIELDED, [{"input": "Tea at 4 on Monday.", "output": '{"day": "Monday", "time": "4"}'}]))
    assert recipe.task.fields == ["day", "time"]


@pytest.mark.parametrize("text, labels_file, words", [
    (FIELDED.replace("[day, time]", "[day, day]"), None, ["task.fields", "different"]),
    (FIELDED.replace("[day, time]", "[day, '']"), None, ["task.fields", "non-empty"]),
    (FIELDED + "  labels: [a, b]\n", None, ["task.fields and task.labels", "not both"]),
    (FIELDED + "  rationale: true\n", None, ["task.rationale", "false"]),
    (FIELDED.replace('{"day": null, "time": "later"}', '{"day": null}'), None,
     ["task.seed_examples[2]", "lacks the field 'time'"]),
    (FIELDED.replace('{"day": "Friday", "time": "noon"}', 'Friday, noon'), None,
     ["task.seed_examples[1]", "is not JSON", '{"day": "...", "time": "..."}']),
    (FIELDED, [{"input": "a", "output": '{"day": "a", "time": "b"}'},
               {"input": "b", "output": '{"day": "a", "time": "b", "place": "c"}'}],
     ["labels.jsonl", "record 2", "has the field 'place'"]),
])
def test_bad_fields_tasks_are_one_line_errors(tmp_path, text, labels_file, words):
    with pytest.raises(UserError) as err:
        load_recipe(write(tmp_path, text, labels_file))
    assert "\n" not in str(err.value)
    for word in words:
        assert word in str(err.value)


def test_verbatim_is_a_fields_task_key(tmp_path):
    assert load_recipe(write(tmp_path, FIELDED)).task.verbatim is False  # the default
    assert load_recipe(write(tmp_path, FIELDED + "  verbatim: true\n")).task.verbatim is True
    events = load_recipe(EVENTS)
    assert events.task.verbatim is True and events.task.fields == ["day", "time", "place"]


def test_bad_verbatim_keys_are_one_line_errors_too(tmp_path):
    for text, words in [
        (LABELLED + "  distinct_values: true\n", ["task.distinct_values", "only a fields task"]),
        (FIELDED.replace('"time": "noon"', '"time": "Friday"') + "  distinct_values: true\n",
         ["task.seed_examples[1]", "overlap"]),
        (LABELLED + "  input_request: a short review\n", ["task.input_request", "task.label_request"]),
        (FIELDED + "  input_request: a message about {topic}\n", ["task.input_request", "plain words"]),
        (LABELLED + "  copy_bias: 2.0\n", ["task.copy_bias", "only a free-text task"]),
        (FIELDED + "  copy_bias: 1\n", ["task.copy_bias", "only a free-text task"]),
        (LABELLED + "  copy_bias: -1\n", ["task.copy_bias", "from 0", "-1"]),
        (LABELLED + "  copy_bias: lots\n", ["task.copy_bias"]),
    ]:
        with pytest.raises(UserError) as err:
            load_recipe(write(tmp_path, text))
        assert "\n" not in str(err.value)
        for word in words:
            assert word in str(err.value)
    assert load_recipe(write(tmp_path, FIELDED + "  distinct_values: true\n")).task.distinct_values is True


@pytest.mark.parametrize("text, words", [
    (FIELDED + "  verbatim: yes please\n", ["task.verbatim", "true/false", "'yes please'"]),
    (FIELDED + "  verbatim: 1\n", ["task.verbatim", "true/false"]),
    (LABELLED + "  verbatim: true\n", ["task.verbatim", "only a fields task"]),
    (FIELDED.replace('"time": "later"', '"time": "Later"') + "  verbatim: true\n",
     ["task.seed_examples[2]", "'time'", "not a span of whole words of the input"]),
    (FIELDED.replace('"time": "noon"', '"time": "noo"') + "  verbatim: true\n",  # inside a word
     ["task.seed_examples[1]", "'time'", "whole words"]),
    (FIELDED.replace('"day": null', '"day": ""') + "  verbatim: true\n", ["task.seed_examples[2]", "'day'", "empty"]),
])
def test_bad_verbatim_keys_are_one_line_errors(tmp_path, text, words):
    with pytest.raises(UserError) as err:
        load_recipe(write(tmp_path, text))
    assert "\n" not in str(err.value)
    for word in words:
        assert word in str(err.value)


def test_the_shortest_input_follows_the_seeds():
    from types import SimpleNamespace

    from edgestill.distill.inputs import MIN_WORDS, acceptable, min_words
    from edgestill.recipe import Example

    def task(*inputs):
        return SimpleNamespace(seed_examples=[Example(x, "") for x in inputs])

    long_seed = "The council voted on Tuesday to keep the library open until nine on weekdays."
    assert MIN_WORDS == 12 and min_words(task(long_seed)) == 12  # never above 12
    assert min_words(task(long_seed, "Lunch Friday at noon.")) == 4
    assert min_words(load_recipe(EVENTS).task) == 10  # "Soccer practice moved to ... 8:30am sharp."
    def tokens(text):  # a whitespace "tokenizer"
        return {"input_ids": text.split()}

    ten = "Yoga class moved to the gym, Monday at 6 pm."
    assert acceptable(ten, tokens, 64, 10) and not acceptable(ten, tokens, 64)  # 10 words: below 12, not below 10
    assert not acceptable("Lunch at noon.", tokens, 64, 4) and acceptable("Lunch Friday at noon.", tokens, 64, 4)


def test_fields_cli_exit_2_without_traceback(tmp_path):
    path = write(tmp_path, FIELDED, [{"input": "b", "output": '{"day": "a"}'}])
    done = subprocess.run([sys.executable, "-m", "edgestill.recipe", str(path)], capture_output=True, text=True)
    assert done.returncode == 2 and "lacks the field 'time'" in done.stderr and "Traceback" not in done.stderr


def test_a_label_task_asks_for_inputs_of_one_label_and_keeps_those_the_teacher_agrees_with(tmp_path):
    import random

    from edgestill.distill.__main__ import agreeing
    from edgestill.distill.prompts import label_generation_messages, pick_shown

    task = load_recipe(write(tmp_path, LABELLED + "  label_request: a short {label} customer review\n")).task
    shown = pick_shown(task, random.Random(0), of="negative")
    assert [ex.input for ex in shown] == ["Awful."]  # only the seeds of the asked label
    turns = label_generation_messages(task, random.Random(0), shown, "negative")
    assert turns[0]["content"] == "Write a short negative customer review." and turns[1]["content"] == "Awful."
    assert turns[-1]["content"] == "Write another negative one, on a new subject."
    task.label_request = ""  # the generic request names the answer
    assert "Its answer: negative." in label_generation_messages(task, random.Random(0), shown, "negative")[0]["content"]

    records = [{"output": "positive", "asked": "positive"}, {"output": "negative", "asked": "positive"},
               {"output": "negative", "asked": "negative"}, {"output": "positive"}]  # the last: a user's input
    kept, dropped = agreeing(records)
    assert kept == [records[0], records[2], records[3]] and dropped == {"label_disagrees": 1}
    assert agreeing([{"output": "positive"}]) == ([{"output": "positive"}], None)
    with pytest.raises(UserError, match="label_request"):
        agreeing([{"output": "negative", "asked": "positive"}])
