"""The export transforms as commands of their own, on a student folder (no recipe needed).

    edgestill gptq build/default/student /tmp/student-gptq --bits 4 --block 32 \\
        --data build/default/data/teacher.jsonl --instruction "Summarize ..."
    edgestill qat build/default/student build/default/student-qat-int4 --bits 4 --block 32 \\
        --data build/default/data/teacher.jsonl --instruction "Summarize ..." [--steps 30] [--start gptq|weights]

Also `python -m edgestill.export.passes gptq|qat ...`. `edgestill export RECIPE` runs these
passes itself for the presets that name them (export/quantize.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from edgestill.errors import UserError, cli_main
from edgestill.export.calibrated import qat_pass
from edgestill.export.calibration import calibration_ids
from edgestill.export.gptq import GptqSettings, gptq_checkpoint
from edgestill.export.qat import QatSettings


def gptq_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="edgestill gptq", description="GPTQ: round a student checkpoint onto the bundle's MatMulNBits grid, calibrated on the task's train text.")
    p.add_argument("student")
    p.add_argument("out")
    p.add_argument("--data", required=True, help="teacher.jsonl: calibrates on its train split")
    p.add_argument("--instruction", required=True)
    p.add_argument("--bits", type=int, default=GptqSettings.bits)
    p.add_argument("--block", type=int, default=GptqSettings.block)
    p.add_argument("--damp", type=float, default=GptqSettings.damp)
    p.add_argument("--lm-head", choices=("first", "last", "rtn"), default=GptqSettings.lm_head,
                   help="GPTQ the LM head before the layers (default), after them, or leave it to RTN")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    student = Path(a.student)
    if not (student / "config.json").is_file():
        raise UserError(f"{student}: not a student folder (no config.json)")
    ids = calibration_ids(student, Path(a.data), a.instruction, [])
    record = gptq_checkpoint(student, Path(a.out), ids, GptqSettings(a.bits, a.block, a.damp, a.lm_head))
    print(json.dumps({k: v for k, v in record.items() if k != "relative_output_error"}, indent=2))
    return 0


def qat_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="edgestill qat", description="Quantization-aware pass: a short extra training that makes a student survive its bundle's quantization.")
    p.add_argument("student")
    p.add_argument("out")
    p.add_argument("--data", required=True, help="teacher.jsonl with train/eval splits")
    p.add_argument("--instruction", required=True)
    for f in ("bits", "block", "steps", "batch_size", "seed"):
        p.add_argument(f"--{f.replace('_', '-')}", type=int, default=getattr(QatSettings, f))
    p.add_argument("--lr", type=float, default=QatSettings.lr)
    p.add_argument("--no-activations", action="store_true", help="do not simulate int8 activation rounding")
    p.add_argument("--start", choices=("gptq", "weights"), default=QatSettings.start,
                   help="train from GPTQ's rounding of the smoothed student (default) or from its own weights")
    p.add_argument("--smooth", action="store_true", help="with --start weights: smooth the activations first")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    student = Path(a.student)
    if not (student / "config.json").is_file():
        raise UserError(f"{student}: not a student folder (no config.json)")
    s = QatSettings(a.bits, a.block, a.steps, a.batch_size, a.lr, a.seed, not a.no_activations, a.smooth, a.start)
    print(json.dumps(qat_pass(student, Path(a.out), Path(a.data), a.instruction, s), indent=2))
    return 0


COMMANDS = {"gptq": gptq_main, "qat": qat_main}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print("usage: python -m edgestill.export.passes {gptq,qat} ...", file=sys.stderr)
        sys.exit(2)
    cli_main(COMMANDS[sys.argv[1]], sys.argv[2:])
