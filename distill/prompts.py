"""Prompts: what the teacher is asked (new inputs, answers) and how the student is prompted.

- `input_generation_messages`: few-shot, as the seeds of this field describe: 2 of the user's
  seed inputs (a different random choice per batch) shown as the teacher's own earlier turns,
  then a request for one more, with an optional topic hint from `task.topics` for coverage.
- `user_message`: instruction + input, the one user turn both teacher and student see.
- `few_shot_messages`: a fields task's teacher conversation: the seeds as earlier turns, then the
  input (the student still sees the one user turn).
- `STUDENT_CHAT_TEMPLATE`: ChatML without a default system prompt, so the student's prefill is
  short; the teacher keeps its own template.
"""

from __future__ import annotations

import random

from edgestill.recipe import Task
from edgestill.tensors import user_message

STUDENT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def chat_messages_prompt(tokenizer, messages: list[dict]) -> str:
    """A whole conversation in the tokenizer's chat template, ready for the next assistant turn."""
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def pick_shown(task: Task, rng: random.Random, k: int = 2, of: str | None = None) -> list:
    """`k` seed examples to show, a different random choice each call; with `of`, seeds whose output
    is that label (all seeds when none is)."""
    pool = [ex for ex in task.seed_examples if ex.output == of] if of is not None else []
    pool = pool or task.seed_examples
    return rng.sample(pool, k=min(len(pool), k))


def input_generation_messages(task: Task, rng: random.Random, shown: list) -> list[dict]:
    """A few-shot conversation asking for one new input like the `shown` seed inputs.

    The seeds are the assistant's own earlier turns, so the teacher continues the pattern
    (a bare text, no "Here is..." preamble, no talk about the task). Measured on the default
    recipe with the bundled teacher: 95 of 96 sampled texts pass the filters, against about
    45% when the seeds were quoted inside one user message with the task instruction.
    The topic hint comes last, so requests showing the same seeds share their token prefix,
    which `distill.generate` runs once per batch. With `task.input_request` the first request names
    the kind of text instead (e.g. "a short message that invites someone to an event, with its day,
    time and place"), as `task.label_request` does for a label task.
    """
    first = (f"Write {task.input_request}." if task.input_request else
             f"Write a short text like the ones this task takes as input: \"{task.instruction}\"")
    messages = []
    for i, ex in enumerate(shown):
        ask = first if i == 0 else "Write another one, on a different subject."
        messages += [{"role": "user", "content": ask}, {"role": "assistant", "content": ex.input}]
    topic = f"about {rng.choice(task.topics)}" if task.topics else "on a new subject"
    return messages + [{"role": "user", "content": f"Write another one, {topic}."}]


def label_generation_messages(task: Task, rng: random.Random, shown: list, label: str) -> list[dict]:
    """`input_generation_messages` for a label task: a new input whose answer should be `label`,
    shown seeds of that label. With `task.label_request` (e.g. "a short {label} customer review")
    the request names the kind of text; without, it names the answer. Measured on the reviews
    recipe (32 texts, half per label): the teacher's own label agrees with the asked one on 0.84
    with "a short {label} customer review", 0.69 with the generic wording; unconditioned, its
    texts are mostly neutral and its labels on them near coin flips (median margin 0.24 nats)."""
    first = (f"Write {task.label_request.format(label=label)}." if task.label_request else
             f'Write a short text like the ones this task takes as input: "{task.instruction}" Its answer: {label}.')
    again = (f"Write another {label} one" if task.label_request else f"Write another one whose answer is {label}")
    messages = []
    for i, ex in enumerate(shown):
        messages += [{"role": "user", "content": first if i == 0 else f"{again}, on a different subject."},
                     {"role": "assistant", "content": ex.input}]
    topic = f"about {rng.choice(task.topics)}" if task.topics else "on a new subject"
    return messages + [{"role": "user", "content": f"{again}, {topic}."}]


def few_shot_messages(task: Task, message: str) -> list[dict]:
    """A fields task's teacher conversation: each seed as an earlier user turn (instruction + its
    input) answered with its output, then `message`. Shown them, the bundled 135M teacher's field
    F1 on the events dev set rises from 0.44 to 0.76 (recipes/events.yaml)."""
    turns = []
    for ex in task.seed_examples:
        turns += [{"role": "user", "content": user_message(task.instruction, ex.input)},
                  {"role": "assistant", "content": ex.output}]
    return turns + [{"role": "user", "content": message}]
