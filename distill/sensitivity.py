"""How far the task's metrics move between two near-identical models: the teacher with a tiny
weight perturbation, scored against its own answers exactly as the student is.

This is the `teacher_noise` baseline of `distill.baselines` (run by `edgestill distill`, written
to `baselines.teacher_noise` of distill_report.json). Every floating-point weight of a copy of
the teacher is scaled by `1 + sigma * N(0, 1)` (seeded), for each sigma of
`distill.teacher_noise`; the copy answers the eval split greedily and is scored with ROUGE-L and
teacher-forced token agreement against the unperturbed teacher's records.

Why: greedy decoding amplifies small differences (one different token changes the rest of the
answer), so ROUGE-L of greedy outputs punishes a student far more than its per-token agreement
suggests; a student's ROUGE-L reads best next to these references (figures: docs/log.md). A quantized (bitsandbytes) or server teacher, or
several round-robin teachers, are skipped, with the reason; so is a fields task, whose teacher
answered a few-shot conversation that the student-style evaluation here does not replay.
"""

from __future__ import annotations

import copy
import logging

from edgestill.distill.evaluate import evaluate

log = logging.getLogger(__name__)


def perturbed(model, sigma: float, seed: int):
    """A copy of `model` with every floating-point parameter scaled by 1 + sigma * N(0, 1)."""
    import torch

    noisy = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in noisy.parameters():
            if p.is_floating_point():
                p.mul_(1 + sigma * torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.device, p.dtype))
    return noisy.eval()


def skip_reason(model, several: bool = False, served: bool = False, fields: bool = False) -> str | None:
    """Why the teacher cannot be perturbed here, or None (`served`: a server wrote the answers;
    `fields`: a fields task)."""
    if fields:
        return ("a fields task's teacher answered with the seeds shown few-shot, and the perturbed copy would be "
                "prompted like the student (one user turn): its answers would not be comparable")
    if several:
        return "several teachers answered the records (round_robin); no one teacher's answers to compare with"
    if model is None or served:
        return ("the teacher is a server: its answers need not be those of any local weights (the "
                "tokenizer folder's model may differ from the served one, or be served quantized)")
    if getattr(model, "is_quantized", False) or any(not p.is_floating_point() for p in model.parameters()):
        return "the teacher is quantized (bitsandbytes); its weights are not plain floats"
    return None


def teacher_noise(model, tokenizer, eval_records: list[dict], teacher_examples, recipe) -> dict:
    """`baselines.teacher_noise`: per sigma of `recipe.distill.teacher_noise`, the perturbed
    teacher's quality vs the teacher (skipped as `skip_reason` says, from `recipe.teacher`).

    `teacher_examples()` gives the eval records as `distill.train.build_examples` makes them in
    the teacher's own ids (no vocabulary map); it is called only when the teacher can be run."""
    what = ("the teacher with every weight scaled by 1 + sigma * N(0, 1), scored against its own "
            "answers: how far a near-identical model's greedy answers move")
    t = recipe.teacher
    reason = skip_reason(model, several=bool(t.sources) and t.combine == "round_robin", served=t.source == "openai",
                         fields=bool(getattr(recipe.task, "fields", None)))
    if reason or not eval_records:
        log.info("teacher_noise skipped: %s", reason or "no eval split")
        return {"skipped": reason or "no eval split", "what": what}
    runs, examples = [], teacher_examples()
    for sigma in recipe.distill.teacher_noise:
        noisy = perturbed(model, sigma, recipe.distill.seed)
        quality = evaluate(noisy, tokenizer, eval_records, examples, recipe.task,
                           desc=f"teacher, {sigma:g} weight noise")["quality"]
        runs.append({"sigma": sigma, "quality": quality})
        del noisy
    return {"runs": runs, "quality": runs[0]["quality"], "sigma": runs[0]["sigma"], "what": what}
