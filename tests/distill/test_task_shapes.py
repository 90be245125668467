"""A label task's recipe: its label set, seeds and labelled file are checked when it loads, each
mistake one line naming the key, file or record (edgestill/task_shapes.py)."""

import json
import subprocess
import sys
import textwrap

import pytest

from edgestill.errors import UserError
from edgestill.recipe import load_recipe

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
