"""The report's headline: one ground-truth score per model, chosen by the task's shape, and retention.

    headline_metric(quality)  -> ("accuracy_vs_label", "accuracy")
    build_headline(distill_report, report["models"], rows_by_model, eval_records, answer_tokens, prompt_tokens)

| the run's quality holds | task | headline | next columns |
|---|---|---|---|
| `accuracy_vs_label` | label task | `accuracy_vs_label` | `macro_f1_vs_label` |
| `exact_match_vs_label` with `field_f1_vs_label` or `json_valid` | extraction (fields task) | `exact_match_vs_label` | `field_f1_vs_label`, `json_valid` |
| `rouge_l_vs_label` | free text with references | `rouge_l_vs_label` | `rouge_l_vs_teacher`, `novel_word_share` |
| none of these (no labelled eval data) | any | `rouge_l_vs_teacher` (imitation) | – |

Rows, in this order: the teacher zero-shot (its answers in data/teacher.jsonl, the ones distill
scored: the retention reference), the teacher's best prompted procedure (distill report
`quality.teacher_best_<metric>` [+ `_ci95`, `teacher_best_procedure`], only when present), every
bundle in our runtime (teacher bundle first), the fp32 PyTorch student (distill report), the
distill report's baselines (`init`, `sft`, `seeds` / `seeds_only`, ...) and the trivial one
(always the majority label for a label task; the input echoed, when distill measured it).

Each row: `score` {value, ci95} (intervals as stored, `_ci95` or `_ci95_lo`/`_hi`, else the
bootstrap of the row's per-example scores), `secondary` {metric: score}, `params`, `file_bytes`,
`request_ms` (estimated per request: TTFT at the benchmark's prompt length + `answer_tokens` at
the p50 decode rate; bundles only) and `retention` (benchmarks/retention.py) against the teacher
zero-shot on the same examples. Per-example scores come from the bundles' answers
(benchmarks/quality.py rows), the distill report's `per_example` (`correct_vs_label` for
accuracy, the metric's own name otherwise) and, for the teacher, the majority label and the
echo, from the eval records themselves.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from edgestill.benchmarks.retention import retention
from edgestill.intervals import interval
from edgestill.metrics import novel_word_share, rouge_l

IMITATION = ("rouge_l_vs_teacher", "ROUGE-L vs teacher")
LABEL = (("accuracy_vs_label", "accuracy"), (("macro_f1_vs_label", "macro-F1"),))
EXTRACTION = (("exact_match_vs_label", "exact match"),
              (("field_f1_vs_label", "field F1"), ("json_valid", "valid JSON")))
NOVEL = ("novel_word_share", "new words (in neither input nor reference)")  # lower is better
REFERENCES = (("rouge_l_vs_label", "ROUGE-L vs reference"), (IMITATION, NOVEL))
SHAPES = (LABEL, EXTRACTION, REFERENCES)  # ((headline key, name), the columns after it)
# distill's per_example name, where it differs: 0/1 per example for a label and for every field right
PER_EXAMPLE = {"accuracy_vs_label": "correct_vs_label", "exact_match_vs_label": "correct_vs_label"}
FIELD_SCORES = {"exact_match_vs_label": "correct", "field_f1_vs_label": "field_f1"}  # edgestill.field_metrics
BASELINES = {"init": "untrained init", "sft": "SFT only (hard targets)", "seeds": "trained on the seeds alone",
             "seeds_only": "trained on the seeds alone", "seed_only": "trained on the seeds alone"}
NOT_ROWS = ("teacher_noise", "echo_input")  # the noisy teacher stays in the notes; the echo is the trivial row
OUR_ENGINE = "edgestill-runtime"


def headline_metric(quality: dict) -> tuple[str, str]:
    """(key, name) of the headline metric for a quality dict: ground truth by task shape when the
    run has labelled eval data, else ROUGE-L against the teacher's answers. Free text with labels
    has `exact_match_vs_label` too, so extraction is told by its other figures."""
    def has(key: str) -> bool:
        return number(quality.get(key)) is not None

    if has("accuracy_vs_label"):
        return LABEL[0]
    if has("exact_match_vs_label") and (has("field_f1_vs_label") or has("json_valid")):
        return EXTRACTION[0]
    return REFERENCES[0] if has("rouge_l_vs_label") else IMITATION


def secondary_metrics(key: str) -> tuple[tuple[str, str], ...]:
    """The columns shown after the headline `key`."""
    return next((columns for (k, _), columns in SHAPES if k == key), ())


def number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def ci95(quality: dict, key: str) -> list[float] | None:
    """`key`'s stored 95% interval: `key_ci95` [lo, hi] (distill) or `key_ci95_lo` / `_hi` (bundles)."""
    pair = quality.get(f"{key}_ci95")
    if isinstance(pair, (list, tuple)) and len(pair) == 2:
        return [pair[0], pair[1]]
    lo, hi = quality.get(f"{key}_ci95_lo"), quality.get(f"{key}_ci95_hi")
    return [lo, hi] if lo is not None and hi is not None else None


def from_scores(scores: list[float] | None) -> dict | None:
    """{value, ci95} of a per-example list: its mean and bootstrap interval."""
    if not scores:
        return None
    return {"value": round(sum(scores) / len(scores), 4), "ci95": interval(scores)}


def figure(quality: dict, key: str, scores: list[float] | None = None) -> dict | None:
    """{value, ci95} of `key` in `quality` (interval stored, else from `scores`, the same examples'
    per-example list); from `scores` alone when `quality` lacks the key."""
    value = number(quality.get(key))
    if value is None:
        return from_scores(scores)
    return {"value": value, "ci95": ci95(quality, key) or (from_scores(scores) or {}).get("ci95")}


def gold_scores(answers: list[str], records: list[dict], key: str,
                fields: list[str] | None = None) -> list[float] | None:
    """Per-example `key` of `answers` against each record's `label` (or teacher `output` for
    ROUGE-L vs teacher; a fields task's figures need its `fields`); None for a metric not
    computed here or a record without its reference."""
    ref = "output" if key == IMITATION[0] else "label"
    if not records or len(answers) != len(records) or any(r.get(ref) is None for r in records):
        return None
    if key == "accuracy_vs_label":
        return [float(a == r[ref]) for a, r in zip(answers, records)]
    if key in ("rouge_l_vs_label", IMITATION[0]):
        return [round(rouge_l(a, r[ref]), 4) for a, r in zip(answers, records)]
    if key == NOVEL[0]:
        if any(r.get("input") is None for r in records):
            return None
        return [round(novel_word_share(a, r["input"], r[ref]), 4) for a, r in zip(answers, records)]
    if fields and key in (*FIELD_SCORES, "json_valid"):
        from edgestill.field_metrics import field_scores

        try:
            per_example = field_scores(answers, [r[ref] for r in records], fields)["per_example"]
        except ValueError:  # a label that is not JSON: the recipe check refuses those, old data may not
            return None
        return [float(v) for v in per_example[FIELD_SCORES.get(key, key)]]
    return None


def row_scores(rows: list[dict] | None, key: str, fields: list[str] | None = None) -> list[float] | None:
    """A bundle's per-example `key` from its answer rows (benchmarks.quality.bundle_quality): the
    rows' own figure when they carry one, else scored here."""
    if not rows:
        return None
    own = [number(r.get(PER_EXAMPLE.get(key, key))) for r in rows]
    if all(v is not None for v in own):
        return own
    return gold_scores([r["output"] for r in rows], [{"label": r.get("label"), "output": r.get("teacher"),
                                                      "input": r.get("input")} for r in rows], key, fields)


def prefixed(quality: dict, prefix: str) -> dict:
    """The keys of `quality` starting with `prefix`, without it (`teacher_accuracy_vs_label` -> ...)."""
    return {k[len(prefix):]: v for k, v in quality.items() if k.startswith(prefix)}


def request_ms(model: dict, answer_tokens: int | None) -> float | None:
    """Estimated time of one request: TTFT (prefill) + `answer_tokens` at the p50 decode rate."""
    ttft, rate = model.get("ttft_ms_p50"), model.get("decode_tok_s_p50")
    if ttft is None or not rate or not answer_tokens:
        return None
    return round(ttft + answer_tokens * 1000.0 / rate, 1)


def answer_tokens(bundle_dir, labels: list[str] | None, max_new_tokens: int) -> int:
    """Tokens of one answer: the longest label's + the end token (label task, in the bundle's
    tokenizer), else `max_new_tokens` (free text: the cap on an answer)."""
    if not labels:
        return max_new_tokens
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(bundle_dir) / "tokenizer.json"))
    return max(len(tok.encode(label, add_special_tokens=False).ids) for label in labels) + 1


def entry(name: str, what: str, role: str, score: dict | None, secondary: dict, source: str,
          scores: list[float] | None = None, **figures) -> dict:
    """One row; `source` ("bench" | "distill") and `scores` (per-example) only serve retention."""
    return {"name": name, "what": what, "role": role, "score": score, "secondary": secondary,
            "params": None, "file_bytes": None, "request_ms": None, **figures, "_source": source, "_scores": scores}


@dataclass(frozen=True)
class Shape:
    """What the headline scores: its key and name, the next columns, and a fields task's fields."""

    key: str
    name: str
    columns: tuple[tuple[str, str], ...] = ()
    fields: tuple[str, ...] = ()

    def scores(self, answers: list[str], records: list[dict], key: str | None = None) -> list[float] | None:
        return gold_scores(answers, records, key or self.key, list(self.fields))


def teacher_entries(distill: dict, evals: list[dict], shape: Shape, params: int | None,
                    name: str = "teacher, zero-shot") -> list[dict]:
    """The teacher as it answered the training data (`name`: zero-shot, or few-shot for a fields task;
    from its recorded answers, else the distill report's `teacher_*` figures) and its best prompted
    procedure when the distill report has one."""
    quality = distill.get("quality") or {}
    own, best = prefixed(quality, "teacher_"), prefixed(quality, "teacher_best_")
    outputs = [r["output"] for r in evals]

    def score_of(k: str, scores=None):
        return None if k == IMITATION[0] else (from_scores(scores) or figure(own, k))

    scores = shape.scores(outputs, evals)
    rows = [entry(name, "its answers in data/teacher.jsonl", "teacher", score_of(shape.key, scores),
                  {k: score_of(k, shape.scores(outputs, evals, k)) for k, _ in shape.columns}, "bench", scores,
                  params=params, reference=True)]
    if number(best.get(shape.key)) is not None:
        procedure = best.get("procedure")
        rows.append(entry(f"teacher, best prompt{f' ({procedure})' if procedure else ''}", "distill report",
                          "teacher", figure(best, shape.key), {k: figure(best, k) for k, _ in shape.columns},
                          "distill", params=params))
    return rows


def bundle_entries(models: list[dict], rows_by_model: dict, shape: Shape, tokens: int | None) -> list[dict]:
    """Every bundle in our runtime (one per bundle: its first target), scored on the benchmark's eval examples."""
    out, seen = [], set()
    for m in models:
        if m.get("engine", OUR_ENGINE) != OUR_ENGINE or m["name"] in seen:
            continue
        seen.add(m["name"])
        q, rows = m.get("quality") or {}, rows_by_model.get(m["name"])
        scores = row_scores(rows, shape.key, list(shape.fields))
        out.append(entry(m.get("label") or m["name"], "bundle, our runtime", m["role"], figure(q, shape.key, scores),
                         {k: figure(q, k, row_scores(rows, k, list(shape.fields))) for k, _ in shape.columns},
                         "bench", scores, precision=m.get("precision"), params=m.get("params"),
                         file_bytes=m.get("file_bytes"), request_ms=request_ms(m, tokens),
                         peak_rss_mb=m.get("peak_rss_mb"), decode_tok_s_p50=m.get("decode_tok_s_p50")))
    return out


def distilled_entry(name: str, role: str, result: dict, shape: Shape, params) -> dict | None:
    """A model the distill report scored (the student or a baseline), with its per-example list."""
    q, per_example = result.get("quality") or {}, result.get("per_example") or {}
    scores = per_example.get(PER_EXAMPLE.get(shape.key, shape.key))
    score = figure(q, shape.key, scores if number(q.get(shape.key)) is not None else None)
    if score is None:
        return None
    what = "PyTorch, distill report" if role == "student" else "baseline, distill report"
    return entry(name, what, role, score, {k: figure(q, k) for k, _ in shape.columns}, "distill", scores,
                 params=params)


def baseline_entries(distill: dict, evals: list[dict], shape: Shape, params) -> list[dict]:
    """The distill report's trained baselines, then the trivial one (majority label or echo)."""
    baselines = distill.get("baselines") or {}
    rows = [distilled_entry(BASELINES.get(name, name), "baseline", b, shape, params)
            for name, b in baselines.items() if name not in NOT_ROWS and isinstance(b, dict)]
    return [r for r in rows if r] + trivial_entries(distill, evals, shape)


def trivial_entries(distill: dict, evals: list[dict], shape: Shape) -> list[dict]:
    """Always the majority label (label task), or the input as the answer for free text (when
    distill measured it); none for extraction (an input is no JSON answer)."""
    if shape.key == "accuracy_vs_label":
        golds = [r.get("label") for r in evals]
        if golds and None not in golds:
            top = Counter(golds).most_common(1)[0][0]
            scores = [float(g == top) for g in golds]
            return [entry("always the majority label", "baseline, no model", "baseline", from_scores(scores), {},
                          "bench", scores)]
        value = number((distill.get("quality") or {}).get("majority_label_accuracy"))
        return [entry("always the majority label", "baseline, no model", "baseline",
                      {"value": value, "ci95": None}, {}, "distill")] if value is not None else []
    echo = (distill.get("baselines") or {}).get("echo_input")
    if not isinstance(echo, dict) or shape.fields:
        return []
    scores = gold_scores([r["input"] for r in evals], evals, shape.key)  # no model: scored again here, paired
    if scores:
        return [entry("the input as the answer", "baseline, no model", "baseline", from_scores(scores), {},
                      "bench", scores)]
    row = distilled_entry("the input as the answer", "baseline", echo, Shape(shape.key, shape.name), None)
    return [row | {"what": "baseline, no model"}] if row else []


def add_retention(rows: list[dict], distill: dict, key: str) -> None:
    """Each row's `retention` against the teacher zero-shot (rows[0]): paired on the per-example
    lists of the same source, else the point ratio; none for the imitation headline."""
    teacher = rows[0]
    own = prefixed((distill.get("quality") or {}), "teacher_")
    per_example = distill.get("per_example") or {}
    reference = {"bench": (teacher["_scores"], (teacher["score"] or {}).get("value")),
                 "distill": (per_example.get(f"teacher_{PER_EXAMPLE.get(key, key)}") or teacher["_scores"],
                             number(own.get(key)) or (teacher["score"] or {}).get("value"))}
    for row in rows:
        if key == IMITATION[0] or row is teacher or row["score"] is None:
            row["retention"] = None
            continue
        scores, value = reference[row["_source"]]
        row["retention"] = retention(row["_scores"], scores, row["score"]["value"], value)


def task_shape(distill: dict, models: list[dict], fields: list[str] | None) -> Shape:
    """The headline of this run, from the distill report's and every bundle's quality figures."""
    quality = {**(distill.get("quality") or {}), **{k: v for m in models for k, v in (m.get("quality") or {}).items()}}
    key, name = headline_metric(quality)
    fields = fields or (distill.get("task") or {}).get("fields") or ()
    return Shape(key, name, secondary_metrics(key), tuple(fields))


def build_headline(distill: dict, models: list[dict], rows_by_model: dict[str, list[dict]], evals: list[dict],
                   answer_tokens: int | None = None, prompt_tokens: int | None = None,
                   fields: list[str] | None = None) -> dict | None:
    """The headline dict of report.json (see the module's docstring); None when no row has a score.
    `fields`: a fields task's fields (default: the distill report's `task.fields`)."""
    shape = task_shape(distill, models, fields)
    bundles = bundle_entries(models, rows_by_model, shape, answer_tokens)
    teacher_params = (distill.get("teacher") or {}).get("params") or next(
        (b["params"] for b in bundles if b["role"] == "teacher"), None)
    student_params = (distill.get("student") or {}).get("params")
    student = distilled_entry("student (fp32, PyTorch)", "student", distill, shape, student_params)
    # a fields task's teacher answers few-shot (distill/fields.py); the others zero-shot
    rows = [*teacher_entries(distill, evals, shape, teacher_params,
                             "teacher, few-shot" if fields or (distill.get("task") or {}).get("fields")
                             else "teacher, zero-shot"),
            *[b for b in bundles if b["role"] == "teacher"], *([student] if student else []),
            *[b for b in bundles if b["role"] != "teacher"],
            *baseline_entries(distill, evals, shape, student_params)]
    if not any(r["score"] for r in rows):
        return None
    add_retention(rows, distill, shape.key)
    return {"metric": shape.key, "name": shape.name, "secondary": [list(c) for c in shape.columns],
            "reference": rows[0]["name"], "examples": len(evals), "answer_tokens": answer_tokens,
            "prompt_tokens": prompt_tokens,
            "rows": [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]}
