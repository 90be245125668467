"""Check a recipe's bundles on ARM64's CPU kernels, emulated with qemu-user: do they keep their quality?

    python -m edgestill.export.arm64 recipes/default.yaml                        # every bundle, cortex-a76 + cortex-a72
    python -m edgestill.export.arm64 recipes/default.yaml --precisions int8 int4 --cpu cortex-a76 --limit 8

onnxruntime picks its kernels by CPU: on x86 the int8/int4 MatMulNBits run AVX-512 VNNI or AVX2,
on ARM64 NEON with or without the dot-product instructions. Rounding differs, so a preset that
passes its floor here could fail on a phone. No ARM64 device is lent to this project, so each
bundle runs in an emulated ARM64 Linux (export/arm64_sysroot.py, built on first use) on the
same held-out teacher text as export's quality figures (export/quality.py), once per emulated
core, and once natively on this machine with the same code (export/arm64_worker.py).

For each (bundle, core): top-1 agreement with the fp32 PyTorch student and with the teacher,
perplexity on the teacher's text, the preset's floor and verdict, and against the same bundle
on this x86 machine: top-1 agreement, the largest logit difference, and how many of the greedy
continuations are identical. Written to `build/<name>/arm64/arm64_check.{json,md}`.

Exit status 0 when every bundle reaches its floor on every core, 1 when one does not, 2 for bad
input. Emulated runs say nothing about speed (qemu-user is many times slower than the host).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import signal
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from edgestill.errors import UserError, cli_main
from edgestill.export import arm64_worker
from edgestill.export.__main__ import read_student
from edgestill.export.arm64_sysroot import CPUS, DEVICES, Sysroot, ensure
from edgestill.export.quality import Sequence, eval_pairs, measure, sequences
from edgestill.export.validate import Reference
from edgestill.files import atomic_write_json, atomic_write_text
from edgestill.layout import link_tree, runtime_files
from edgestill.machine import machine_info, one_line
from edgestill.markdown import table_text
from edgestill.recipe import load_recipe, split_args
from edgestill.runtime import Bundle

log = logging.getLogger("export")
WORKER = Path(arm64_worker.__file__).resolve()
DEFAULT_CPUS = ("cortex-a76", "cortex-a72")
GREEDY_PROMPTS = 4
GREEDY_TOKENS = 32
TIMEOUT_S = 3600
HOST = f"{platform.machine()} (this machine)"


class Logits:
    """A worker's saved logits, looked up by token ids (what export.quality.measure asks for)."""

    def __init__(self, seqs: list[Sequence], folder: Path):
        self.files = {tuple(s.ids): folder / f"logits_{i}.npy" for i, s in enumerate(seqs)}

    def logits(self, ids: list[int]) -> np.ndarray:
        return np.load(self.files[tuple(ids)])


def spec(bundle_dir: Path, seqs: list[Sequence], threads: int) -> dict:
    """The worker's input: every sequence, and the first prompts for greedy continuations."""
    return {"bundle": str(bundle_dir), "threads": threads, "sequences": [s.ids for s in seqs],
            "greedy": [s.ids[:s.prompt_len] for s in seqs[:GREEDY_PROMPTS]], "greedy_tokens": GREEDY_TOKENS}


def emulate(sysroot: Sysroot, cpu: str, job: dict, out: Path) -> dict:
    """Run the worker on core `cpu` of the emulated ARM64; its result.json, or UserError why not."""
    spec_file = out.parent / f"{out.name}.spec.json"
    spec_file.write_text(json.dumps(job))
    cmd = [*sysroot.command(cpu), "-P", str(WORKER), str(spec_file), str(out)]
    try:
        code = link_tree(runtime_files(), out.parent / ".code")  # the runtime as the edgestill package
        done = subprocess.run(cmd, env=sysroot.env(code), capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as err:
        raise UserError(f"{cpu}: the emulated run took over {TIMEOUT_S} s; use --limit") from err
    if done.returncode:
        raise UserError(f"{cpu}: the bundle failed on this core ({signal_name(done.returncode)}): "
                        f"{done.stderr.strip()[-400:]}")
    return json.loads((out / "result.json").read_text())


def signal_name(code: int) -> str:
    """`exit status N`, or the signal that killed the run (SIGILL: the core lacks an instruction)."""
    number = -code if code < 0 else code - 128 if code > 128 else None
    if number not in set(signal.Signals):
        return f"exit status {code}"
    name = signal.Signals(number).name
    return f"{name}: an instruction this core lacks" if name == "SIGILL" else name


def against_host(seqs: list[Sequence], got: Logits, host: Logits, greedy: list, host_greedy: list) -> dict:
    """The same bundle emulated vs on this machine: top-1 agreement, max logit diff, greedy equality."""
    agree = positions = 0
    max_diff = 0.0
    for s in seqs:
        a, b = got.logits(s.ids)[s.prompt_len - 1:-1], host.logits(s.ids)[s.prompt_len - 1:-1]
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        positions += len(a)
        max_diff = max(max_diff, float(np.abs(a - b).max()))
    same = sum(x == y for x, y in zip(greedy, host_greedy))
    return {"top1_agreement_vs_x86": round(agree / max(positions, 1), 4), "max_abs_logit_diff_vs_x86":
            float(f"{max_diff:.3g}"), "greedy_identical_vs_x86": same, "greedy_prompts": len(host_greedy)}


def check_bundle(bundle_dir: Path, pairs: list, reference, sysroot: Sysroot, cpus: list[str], work: Path,
                 threads: int) -> list[dict]:
    """Rows for one bundle: this machine first, then each emulated core."""
    bundle = Bundle.open(bundle_dir)
    manifest = bundle.manifest
    floor = (manifest.get("quality_floor") or {}).get("floor")
    seqs = sequences(bundle, pairs)
    job = spec(bundle_dir, seqs, threads)
    base = {"bundle": bundle_dir.name, "precision": manifest.get("precision"), "floor": floor,
            "prompt_tokens": max(1, round(sum(len(p) for p in job["greedy"]) / max(len(job["greedy"]), 1)))}
    host_dir = work / f"{bundle_dir.name}-host"
    host_dir.mkdir(parents=True)
    host_result = arm64_worker.run(job, host_dir)
    host = Logits(seqs, host_dir)
    rows = [{**base, "cpu": HOST, "device": "this machine, natively",
             **verdict(measure(host, seqs, reference), floor), "seconds": host_result["seconds"]}]
    for cpu in cpus:
        out = work / f"{bundle_dir.name}-{cpu}"
        out.mkdir()
        row = {**base, "cpu": cpu, "device": DEVICES[cpu]}
        log.info("%s on %s (emulated): %d sequences, %d greedy continuations; took %.0f s natively", bundle_dir.name,
                 cpu, len(seqs), len(job["greedy"]), host_result["seconds"])
        try:
            result = emulate(sysroot, cpu, job, out)
        except UserError as err:
            rows.append({**row, "passed": False, "error": str(err)})
            log.warning("%s on %s: %s", bundle_dir.name, cpu, err)
            continue
        got = Logits(seqs, out)
        rows.append({**row, **verdict(measure(got, seqs, reference), floor),
                     **against_host(seqs, got, host, result["greedy"], host_result["greedy"]),
                     "emulated_seconds": result["seconds"]})
        log.info("%s on %s: top-1 vs fp32 %.4f (this machine %.4f)", bundle_dir.name, cpu,
                 rows[-1]["top1_agreement_vs_fp32"], rows[0]["top1_agreement_vs_fp32"])
    return rows


def verdict(quality: dict, floor: float | None) -> dict:
    return {**quality, "passed": floor is None or quality["top1_agreement_vs_fp32"] >= floor}


COLUMNS = ("bundle", "core", "top-1 vs fp32", "floor", "verdict", "top-1 vs x86", "max logit diff vs x86",
           "greedy identical", "ppl teacher text")


def table_row(r: dict) -> list:
    if "error" in r:
        return [r["bundle"], r["cpu"], "-", r["floor"], "**error**", "-", "-", "-", r["error"][:80]]
    greedy = f"{r['greedy_identical_vs_x86']}/{r['greedy_prompts']}" if "greedy_prompts" in r else "-"
    vs_x86 = f"{r['top1_agreement_vs_x86']:.4f}" if "top1_agreement_vs_x86" in r else "-"
    return [r["bundle"], r["cpu"], f"{r['top1_agreement_vs_fp32']:.4f}", r["floor"], "ok" if r["passed"] else "**fails**",
            vs_x86, r.get("max_abs_logit_diff_vs_x86"), greedy, f"{r['perplexity_teacher_text']:.3f}"]


def markdown(rows: list[dict], machine: str) -> str:
    """The rows as a Markdown table, with what the figures are."""
    return ("# Bundles on ARM64 kernels (emulated)\n\n"
            f"Host: {machine}. ARM64 cores emulated with qemu-user (`python -m edgestill.export.arm64`); "
            "the same held-out teacher text and code on every row. Emulation checks numerics only, "
            f"not speed.\n\n{table_text(COLUMNS, [table_row(r) for r in rows])}")


RECORD_SCHEMA = "edgestill-bench-record"  # benchmarks/record.schema.json, version 1 (export may not import benchmarks)
QUALITY_KEYS = ("top1_agreement_vs_fp32", "top1_agreement_vs_x86", "max_abs_logit_diff_vs_x86",
                "greedy_identical_vs_x86", "perplexity_teacher_text", "passed")


def record(r: dict, bundle_dir: Path, machine: dict, threads: int) -> dict:
    """One row as a benchmark record: quality figures only (emulation times nothing), target
    `qemu://<core>` for an emulated core, `local` for this machine."""
    status = {"status": "error", "error": r["error"]} if "error" in r else {"status": "ok", "error": None}
    return {"schema": RECORD_SCHEMA, "schema_version": 1, **status, "tool": "arm64_check",
            "name": json.loads((bundle_dir / "manifest.json").read_text()).get("name") or bundle_dir.name,
            "bundle": str(bundle_dir),
            "precision": r["precision"], "engine": "edgestill-runtime", "threads": threads,
            "target": "local" if r["cpu"] == HOST else f"qemu://{r['cpu']}", "prompt_tokens": r["prompt_tokens"],
            "gen_tokens": GREEDY_TOKENS, "repetitions": 1, "load_s": None, "ttft_ms_p50": None, "peak_rss_mb": None,
            "quality": {k: r[k] for k in QUALITY_KEYS if k in r}, "machine": machine,
            "figures": {"device": r["device"], "floor": r["floor"]}}


def bundles_of(build: Path, precisions: list[str]) -> list[Path]:
    found = [build / f"bundle-{p}" for p in precisions]
    missing = [str(b) for b in found if not (b / "manifest.json").is_file()]
    if missing:
        raise UserError(f"no bundle in {', '.join(missing)}; run `edgestill export RECIPE` first")
    return found


def main(argv: list[str]) -> int:
    overrides, rest = split_args(argv)
    parser = argparse.ArgumentParser(prog="edgestill arm64", description=__doc__.split("\n")[0])
    parser.add_argument("recipe")
    parser.add_argument("--build-root", default="build")
    parser.add_argument("--precisions", nargs="+", help="bundles to check (default: the recipe's export.precisions)")
    parser.add_argument("--cpu", nargs="+", default=list(DEFAULT_CPUS), choices=sorted(CPUS))
    parser.add_argument("--limit", type=int, default=None, help="score only the first N held-out texts")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(rest)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    recipe = load_recipe(args.recipe, overrides)
    build = recipe.build_dir(args.build_root)
    bundles = bundles_of(build, args.precisions or recipe.export.precisions)
    pairs = eval_pairs(build / "data" / "teacher.jsonl", [(e.input, e.output) for e in recipe.task.seed_examples],
                       limit=args.limit)

    reference = Reference(read_student(recipe, build)[0])
    sysroot = ensure()
    with tempfile.TemporaryDirectory(prefix="edgestill-arm64-") as tmp:
        rows = [r for b in bundles for r in check_bundle(b, pairs, reference, sysroot, args.cpu, Path(tmp),
                                                         args.threads)]
    info = machine_info()
    machine = one_line(info)
    out = build / "arm64"
    atomic_write_json(out / "arm64_check.json", {"host": info, "cpus": args.cpu, "rows": rows})
    atomic_write_text(out / "arm64_check.md", markdown(rows, machine))
    by_name = {b.name: b for b in bundles}
    atomic_write_text(out / "records.jsonl", "".join(json.dumps(record(r, by_name[r["bundle"]], info, args.threads))
                                                     + "\n" for r in rows))
    print(markdown(rows, machine))
    failing = [f"{r['bundle']} on {r['cpu']}" for r in rows if not r["passed"]]
    if failing:
        print(f"below their floor or failed: {', '.join(failing)}")
    return 1 if failing else 0


if __name__ == "__main__":
    cli_main(main)
