"""The one reader of `build/<name>/data/teacher.jsonl`, the file distill hands to export and benchmarks.

    from edgestill.teacher_data import read_split
    for r in read_split("build/default/data/teacher.jsonl", "eval"):
        print(r.input, r.output, r.ended)

Each line is one record (docs/contracts.md): `id`, `split` ("train" | "eval"), `input`, the
teacher's greedy answer `output`, `ended` (it stopped by itself, so the answer's token sequence
ends with the end token) and more fields that distill alone reads. A torn last line (a killed
writer) is skipped. Stdlib only: the runtime-side tools read it too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from edgestill.files import read_jsonl

SPLITS = ("train", "eval")


@dataclass(frozen=True)
class TeacherRecord:
    """One input and the teacher's answer to it."""

    id: int
    split: str
    input: str
    output: str
    ended: bool
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, r: dict) -> "TeacherRecord":
        known = ("id", "split", "input", "output", "ended")
        return cls(int(r.get("id", -1)), r.get("split", ""), r.get("input", ""), r.get("output") or "",
                   bool(r.get("ended", False)), {k: v for k, v in r.items() if k not in known})


def read_split(path: str | os.PathLike, split: str, answered: bool = True) -> list[TeacherRecord]:
    """The records of `split` ("train", "eval" or "all") in file order; with `answered`, only those
    with a non-empty answer. A missing file reads as no records."""
    if split not in (*SPLITS, "all"):
        raise ValueError(f"split {split!r}: use one of {', '.join(SPLITS)} or 'all'")
    records = (TeacherRecord.from_json(r) for r in read_jsonl(path))
    return [r for r in records if (split == "all" or r.split == split) and (r.output or not answered)]


def answer_sequence(prompt_ids: list[int], answer_ids: list[int], ended: bool, eos_id: int | None) -> list[int]:
    """Prompt + answer, + the end token when the teacher stopped by itself: what every stage
    scores or trains on as the teacher's sequence."""
    return [*prompt_ids, *answer_ids, *([eos_id] if ended and eos_id is not None else [])]

