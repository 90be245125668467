"""Paired comparison of two distill runs scored on the same eval inputs.

    python -m edgestill.distill.compare build_a/default/student/distill_report.json build_b/default/student/distill_report.json

Tuning a recipe means comparing students trained differently on the same data. Their means on
24 eval inputs overlap (each has a ~±0.08 ROUGE-L interval), so this pairs the two students'
per-example scores (`per_example` in each report) and prints A's gain over B with its 95%
bootstrap interval and a verdict, for ROUGE-L and teacher-forced token agreement
(edgestill/intervals.py, distill.evaluate.compare). Both reports must carry the same
`data.eval_inputs_sha256` (copy `data/` between the builds); otherwise it refuses, since
unpaired inputs cannot be compared this way. Exit status 0, or 2 for bad input.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgestill.distill.evaluate import compare
from edgestill.errors import UserError, cli_main
from edgestill.intervals import verdict


def read_report(path: str | Path) -> dict:
    """A distill_report.json that holds per-example scores; UserError naming the file otherwise."""
    path = Path(path)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise UserError(f"{path}: not a readable distill_report.json ({err})") from None
    if not isinstance(report, dict) or not (report.get("per_example") or {}).get("rouge_l_vs_teacher"):
        raise UserError(f"{path}: no per_example scores (a report from an older version, or not a "
                        "distill report); run `edgestill distill RECIPE` again to rescore")
    return report


def paired(a: dict, b: dict, names: tuple[str, str]) -> dict:
    """A's paired gains over B; UserError when the two were scored on different eval inputs."""
    fa, fb = (r.get("data", {}).get("eval_inputs_sha256") for r in (a, b))
    if not fa or fa != fb:
        raise UserError(f"{names[0]} and {names[1]} were not scored on the same eval inputs "
                        "(data.eval_inputs_sha256 differs or is missing): train both from the same data/ "
                        "folder (copy it into the second build) to compare them pairwise")

    return compare(a, b)


def render(gains: dict, a: dict, b: dict, names: tuple[str, str]) -> str:
    lines = [f"A = {names[0]}", f"B = {names[1]}", f"{a['quality']['n_eval']} eval inputs, paired, 95% bootstrap intervals"]
    for metric, g in gains.items():
        lines.append(f"{metric}: A {a['quality'][metric]:.4f}, B {b['quality'][metric]:.4f}; A - B {g['gain']:+.4f} "
                     f"({g['ci95'][0]:+.4f} to {g['ci95'][1]:+.4f}): A is {verdict(g)} B")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="edgestill compare", description=__doc__.split("\n")[0])
    parser.add_argument("report_a", help="a distill_report.json")
    parser.add_argument("report_b", help="another distill_report.json (same eval inputs)")
    args = parser.parse_args(argv)
    argv = [args.report_a, args.report_b]
    a, b = read_report(argv[0]), read_report(argv[1])
    print(render(paired(a, b, (argv[0], argv[1])), a, b, (argv[0], argv[1])))
    return 0


if __name__ == "__main__":
    cli_main(main)
