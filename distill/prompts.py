"""Prompts: what the teacher is asked (new inputs, answers) and how the student is prompted.

- `input_generation_prompt`: few-shot, as the seeds of this field describe: show 2 of the
  user's seed inputs (a different random choice each time) and ask for one new input, with an
  optional topic hint from `task.topics` to widen coverage.
- `user_message`: instruction + input, the one user turn both teacher and student see.
- `STUDENT_CHAT_TEMPLATE`: ChatML without a default system prompt, so the student's prefill is
  short; the teacher keeps its own template.
"""

from __future__ import annotations

import random

from edgestill.recipe import Task

STUDENT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def user_message(instruction: str, text: str) -> str:
    """The single user turn: the task instruction, a blank line, then the input."""
    return f"{instruction}\n\n{text}" if instruction else text


def chat_prompt(tokenizer, message: str) -> str:
    """`message` as one user turn in the tokenizer's chat template, ready for the answer."""
    return tokenizer.apply_chat_template([{"role": "user", "content": message}],
                                         add_generation_prompt=True, tokenize=False)


def input_generation_prompt(task: Task, rng: random.Random) -> str:
    """A few-shot request for one new input like the seed inputs (user message text)."""
    # Two examples: each shown example costs prefill on every request (measured: prefill of the
    # few-shot prompt is about half of the teacher's time per batch on 2 CPU cores).
    shown = rng.sample(task.seed_examples, k=min(len(task.seed_examples), 2))
    examples = "\n\n".join(f"Example {i + 1}:\n{ex.input}" for i, ex in enumerate(shown))
    topic = f" about {rng.choice(task.topics)}" if task.topics else " on a new topic"
    return (
        f"These texts are inputs for the task: \"{task.instruction}\"\n\n{examples}\n\n"
        f"Write one new text of the same kind and length{topic}. "
        "Reply with the new text only."
    )
