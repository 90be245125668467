"""The copy bias in PyTorch (`task.copy_bias`): a logit bonus for the input's own tokens, the same
rule as the runtime's (`Generator.copy_ids`), for the teacher's free-text answers and the distill
evaluation's greedy answers.

    ids = copy_token_ids(tokenizer, paragraph)                 # favoured ids, never a special token
    model.generate(..., logits_processor=LogitsProcessorList([CopyBias([ids], 2.0)]))
    add_copy_bias(logits, [ids_row0, ids_row1], 2.0)          # in a custom decode loop
"""

from __future__ import annotations


def copy_token_ids(tokenizer, text: str) -> list[int]:
    """The ids the copy bias favours for input `text`: its tokens, also after a space, never a special
    token (the runtime's `Generator.copy_ids`)."""
    ids = set(tokenizer(text, add_special_tokens=False)["input_ids"])
    ids |= set(tokenizer(" " + text, add_special_tokens=False)["input_ids"])
    return sorted(ids - set(tokenizer.all_special_ids))


def add_copy_bias(logits, rows: list[list[int]], bias: float):
    """`logits` [len(rows), vocab] with `bias` added at each row's favoured ids (in place; returned)."""
    for row, ids in enumerate(rows):
        if ids:
            logits[row, ids] += bias
    return logits


class CopyBias:
    """A transformers logits processor: `bias` added to each row's favoured token ids."""

    def __init__(self, rows: list[list[int]], bias: float):
        self.rows, self.bias = rows, bias

    def __call__(self, input_ids, scores):
        return add_copy_bias(scores, self.rows, self.bias)
