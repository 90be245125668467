"""Quality of one bundle on the recipe's eval inputs: how close its greedy answers are to the teacher's.

For every record of `build/<name>/data/teacher.jsonl` with `split == "eval"` (the first
`bench.quality_examples` when set), the bundle greedily answers the same user message the
teacher saw (`instruction + "\\n\\n" + input`, in the bundle's own chat template) with
`task.max_output_tokens` new tokens. Scores, means over the examples:

- `rouge_l_vs_teacher`: ROUGE-L F1 against the teacher's `output`;
- `rouge_l_vs_label`: against the record's `label` (ground truth), when records carry one;
- `rouge_l_vs_teacher_ci95_lo` / `_hi`: the 95% bootstrap interval of that mean over the eval
  inputs (edgestill/intervals.py), so that two bundles a couple of points apart are read as what
  they are on 24 inputs: the same.

A label task's bundle answers with `choose` and adds accuracy and macro-F1 against the labels; a
fields task's bundle (manifest `task.fields`) answers with `extract` (always one JSON object of
the fields) and adds `json_valid`, `exact_match_vs_label` and `field_f1_vs_label`, each with
`_ci95_lo` / `_ci95_hi` (edgestill/field_metrics.py).

Figures from the bundle manifest's `quality` dict (e.g. `top1_agreement_vs_fp32` from export)
are carried into the same dict. The per-example answers are kept for the report.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgestill.errors import UserError
from edgestill.field_metrics import field_scores, parse_fields
from edgestill.intervals import interval, paired_gain, verdict
from edgestill.label_metrics import label_scores
from edgestill.metrics import mean_rouge_l, rouge_l
from edgestill.teacher_data import read_split


def eval_records(data_dir: str | Path, limit: int | None = None) -> list[dict]:
    """The eval split of `data_dir/teacher.jsonl`, in file order, at most `limit` records."""
    path = Path(data_dir) / "teacher.jsonl"
    if not path.is_file():
        raise UserError(f"{path} not found; run `edgestill distill RECIPE` first")
    records = [{**r.extra, "id": r.id, "split": r.split, "input": r.input, "output": r.output, "ended": r.ended}
               for r in read_split(path, "eval", answered=False)]  # dicts: label & co stay as distill wrote them
    if not records:
        raise UserError(f"{path} has no records with split == 'eval'; run `edgestill distill RECIPE` again")
    return records[:limit] if limit else records


def teacher_scores(outputs: list[str], records: list[dict]) -> list[float]:
    """ROUGE-L F1 of each output against its record's teacher `output`."""
    return [rouge_l(o, r["output"]) for o, r in zip(outputs, records, strict=True)]


def score(outputs: list[str], records: list[dict], scores: list[float] | None = None) -> dict:
    """Mean ROUGE-L F1 of `outputs` vs each record's teacher `output` (and `label` where all have one);
    `scores`: their `teacher_scores`, when the caller already has them."""
    scores = teacher_scores(outputs, records) if scores is None else scores
    lo, hi = interval(scores)
    result = {"rouge_l_vs_teacher": round(sum(scores) / len(scores), 4),
              "rouge_l_vs_teacher_ci95_lo": lo, "rouge_l_vs_teacher_ci95_hi": hi}
    if all(r.get("label") is not None for r in records):
        result["rouge_l_vs_label"] = round(mean_rouge_l(outputs, [r["label"] for r in records]), 4)
    return result


def generate_outputs(bundle_dir: str | Path, records: list[dict], max_new_tokens: int,
                     threads: int, progress=None) -> list[str]:
    """Greedy answers of the bundle to each record's input (the runtime adds instruction and template)."""
    from edgestill.runtime import Bundle, Generator

    gen = Generator(Bundle.open(bundle_dir), threads=threads)
    outputs = []
    for record in records:
        if gen.bundle.labels:  # a label task: the most likely label, never free text
            outputs.append(gen.choose(record["input"]).text)
        elif gen.bundle.fields:  # a fields task: one JSON object of the fields, never anything else
            outputs.append(json.dumps(gen.extract(record["input"], max_new_tokens=max_new_tokens), ensure_ascii=False))
        else:
            outputs.append(gen.generate(record["input"], max_new_tokens=max_new_tokens, temperature=0.0).strip())
        if progress is not None:
            progress.update(1)
    return outputs


def _manifest(bundle_dir: str | Path) -> dict:
    return json.loads((Path(bundle_dir) / "manifest.json").read_text(encoding="utf-8"))


def carried_figures(bundle_dir: str | Path) -> dict:
    """The bundle manifest's `quality` figures (from export), to show beside the measured ones."""
    return dict(_manifest(bundle_dir).get("quality") or {})


def label_figures(outputs: list[str], records: list[dict], labels: list[str] | None) -> dict:
    """Accuracy and macro-F1 (with 95% intervals) against the records' ground-truth labels, for a
    label task whose every eval record has one; {} otherwise."""
    if not labels or not records or any(r.get("label") is None for r in records):
        return {}
    s = label_scores(outputs, [r["label"] for r in records], labels)
    return {"accuracy_vs_label": s["accuracy"], "accuracy_vs_label_ci95_lo": s["accuracy_ci95"][0],
            "accuracy_vs_label_ci95_hi": s["accuracy_ci95"][1], "macro_f1_vs_label": s["macro_f1"],
            "macro_f1_vs_label_ci95_lo": s["macro_f1_ci95"][0], "macro_f1_vs_label_ci95_hi": s["macro_f1_ci95"][1]}


def _with_interval(name: str, value: float, ci95: list[float]) -> dict:
    return {name: value, f"{name}_ci95_lo": ci95[0], f"{name}_ci95_hi": ci95[1]}


def field_figures(outputs: list[str], records: list[dict], fields: list[str] | None) -> dict:
    """A fields task's share of valid JSON answers and, when every record has a label, exact match and
    field F1 against the labels (each with its 95% interval); {} for other tasks."""
    if not fields or not records:
        return {}
    valid = [float(parse_fields(o, fields) is not None) for o in outputs]
    out = _with_interval("json_valid", round(sum(valid) / len(valid), 4), interval(valid))
    if all(r.get("label") is not None for r in records):
        s = field_scores(outputs, [r["label"] for r in records], fields)
        for name in ("exact_match", "field_f1"):
            out.update(_with_interval(f"{name}_vs_label", s[name], s[f"{name}_ci95"]))
    return out


def bundle_quality(bundle_dir: str | Path, records: list[dict], max_new_tokens: int, threads: int,
                   progress=None) -> tuple[dict, list[dict]]:
    """(quality dict, per-example rows {id, input, teacher, label, output}) for one bundle."""
    outputs = generate_outputs(bundle_dir, records, max_new_tokens, threads, progress)
    scores = teacher_scores(outputs, records)
    task = _manifest(bundle_dir).get("task") or {}
    quality = {**carried_figures(bundle_dir), **score(outputs, records, scores),
               **label_figures(outputs, records, task.get("labels")), **field_figures(outputs, records, task.get("fields"))}
    rows = [{"id": r.get("id", i), "input": r["input"], "teacher": r["output"], "label": r.get("label"),
             "output": out, "rouge_l_vs_teacher": s} for i, (r, out, s) in enumerate(zip(records, outputs, scores))]
    return quality, rows


def gains_over(rows_by_model: dict[str, list[dict]], reference: str) -> dict[str, dict]:
    """Paired ROUGE-L gain (vs the teacher's answers) of every other scored model over `reference`,
    on the same eval inputs (edgestill.intervals.paired_gain), from the rows' scores of
    `bundle_quality`; {} when `reference` was not scored."""
    if reference not in rows_by_model:
        return {}
    ref = [r["rouge_l_vs_teacher"] for r in rows_by_model[reference]]
    return {name: paired_gain([r["rouge_l_vs_teacher"] for r in rows], ref)
            for name, rows in rows_by_model.items() if name != reference and len(rows) == len(ref)}


def gains_note(gains: dict[str, dict], reference: str) -> list[str]:
    """One report note with `gains_over`'s figures: what quantization costs in task quality."""
    if not gains:
        return []
    parts = [f"{name} {g['gain']:+.3f} ({g['ci95'][0]:+.3f} to {g['ci95'][1]:+.3f}: {verdict(g)} it)"
             for name, g in gains.items()]
    return [f"each bundle minus {reference}, paired on the same eval inputs (ROUGE-L vs the teacher, 95% "
            "bootstrap intervals): " + "; ".join(parts)]
