"""The `local` target: each (model, point) measured in a fresh subprocess on this machine.

A measurement that fails (a bundle that does not load, a setting beyond the context) becomes an
error record with the child's one-line message; the other rows still run.
"""

from __future__ import annotations

import logging
import subprocess

from edgestill.benchmarks.measure import measure_in_subprocess
from edgestill.benchmarks.plan import Model, Point, facts, settings
from edgestill.benchmarks.record import error_record
from edgestill.errors import UserError
from edgestill.recipe import Bench

log = logging.getLogger("benchmarks")
TIMEOUT_S = 3600


def measure_one(model: Model, point: Point, bench: Bench) -> dict:
    """One record for `model` at `point`: measured, or an error record saying why not."""
    try:
        return measure_in_subprocess(model.path, point.threads, point.prompt_tokens, point.gen_tokens,
                                     bench.repetitions, timeout=TIMEOUT_S, engine=model.engine,
                                     warmup=bench.warmup, pin=bench.pin_threads, name=model.name, role=model.role)
    except (UserError, RuntimeError) as err:
        message = str(err)
    except subprocess.TimeoutExpired:
        message = f"measuring took longer than {TIMEOUT_S} s; lower bench.repetitions or bench.gen_tokens"
    log.error("  %s (%s): %s", model.name, model.engine, message)
    return error_record(facts(model), settings(point, bench, "local"), message)


def run_local(models: list[Model], points: list[Point], bench: Bench) -> list[dict]:
    records = []
    for model in models:
        for point in points:
            log.info("local: %s (%s), threads %d, %d prompt + %d generated tokens", model.name, model.engine,
                     point.threads, point.prompt_tokens, point.gen_tokens)
            records.append(measure_one(model, point, bench))
    return records
