"""Measure one bundle's speed and memory, alone in its own process.

    python -m benchmarks.measure build/default/bundle-int8 --threads 2 \
        --prompt-tokens 64 --gen-tokens 32 --repetitions 5

prints one JSON record on stdout. Run it as a fresh subprocess (`measure_in_subprocess`) so the
peak RSS is this model's alone. What is timed:

- `load_s`: `Bundle.open` (reads and sha256-checks every file) + `Generator` (session creation).
- `ttft_ms_*`: prefill of exactly `prompt_tokens` tokens of real English text + the first
  token, i.e. the wait until `stream_ids` yields its first id; one warm-up run, then
  `repetitions` timed runs, p50/p90.
- `decode_ms_*`: the time between consecutive ids after the first (one decode step each),
  `gen_tokens` ids per run with `ignore_eos=True`, p50/p90 over every step of every run;
  `decode_tok_s_p50` is the median over runs of (steps / decode time).
- `peak_rss_mb`: `ru_maxrss` of this process at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from edgestill.errors import UserError, cli_main

RECORD_SCHEMA = "edgestill-bench-record"
RECORD_VERSION = 1

# Real text (not token soup) so the prefill sees ordinary subword statistics.
PASSAGE = (
    "The small harbour town wakes up early. Before sunrise the fishing boats leave the quay, "
    "and by eight o'clock the bakery on the main square has already sold most of its bread. "
    "In summer the population triples: visitors rent bicycles, walk along the cliffs and eat "
    "grilled sardines in the restaurants near the lighthouse. The town council has spent the "
    "last two years arguing about a new car park. Shop owners want more parking spaces close "
    "to the centre, while residents worry about traffic on the narrow streets and would rather "
    "see a shuttle bus from a field outside town. A public meeting last week drew more than "
    "three hundred people, and the mayor promised a decision before the end of the autumn. "
    "Meanwhile the old cannery, closed since the nineteen-eighties, is being turned into a "
    "museum about the fishing industry, with photographs, nets and a restored wooden boat. "
)


def prompt_ids(tokenizer, n_tokens: int) -> list[int]:
    """Exactly `n_tokens` ids of real text (the passage repeated as often as needed)."""
    piece = tokenizer.encode(PASSAGE, add_special_tokens=False).ids
    if not piece:
        raise RuntimeError("the bundle's tokenizer encodes the benchmark passage to nothing")
    repeats = n_tokens // len(piece) + 1
    return (piece * repeats)[:n_tokens]


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation, like numpy's default."""
    xs = sorted(values)
    if not xs:
        raise ValueError("percentile of no values")
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def time_one_run(gen, ids: list[int], gen_tokens: int) -> tuple[float, list[float]]:
    """One generation: (seconds to the first id, [seconds of each later decode step])."""
    start = time.perf_counter()
    stamps = []
    for _ in gen.stream_ids(ids, max_new_tokens=gen_tokens, ignore_eos=True):
        stamps.append(time.perf_counter())
    if len(stamps) != gen_tokens:
        raise RuntimeError(f"stream_ids gave {len(stamps)} ids, expected {gen_tokens} (ignore_eos=True)")
    return stamps[0] - start, [b - a for a, b in zip(stamps, stamps[1:])]


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (ru_maxrss: KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1 << 20) if sys.platform == "darwin" else rss / 1024


def manifest_facts(bundle_dir: Path) -> dict:
    """What the record takes from `manifest.json`: identity, size, precision, role, params."""
    path = bundle_dir / "manifest.json"
    if not path.is_file():
        raise UserError(f"{bundle_dir}: no manifest.json; not a bundle (run `python -m export RECIPE`)")
    raw = path.read_bytes()
    manifest = json.loads(raw)
    files = manifest.get("files", {})
    return {
        "name": manifest.get("name") or bundle_dir.name,
        "bundle": str(bundle_dir),
        "bundle_sha256": hashlib.sha256(raw).hexdigest(),  # of manifest.json, which lists every file's sha256
        "role": manifest.get("role", "student"),
        "precision": manifest.get("precision"),
        "quantization": manifest.get("quantization"),
        "params": manifest.get("params"),
        "file_bytes": sum(int(f["bytes"]) for f in files.values()),
    }


def measure_bundle(bundle_dir: str | Path, threads: int, prompt_tokens: int, gen_tokens: int,
                   repetitions: int) -> dict:
    """Measure load, TTFT, decode speed and peak RSS of one bundle in this process; one record."""
    from runtime import Bundle, Generator

    bundle_dir = Path(bundle_dir)
    record = manifest_facts(bundle_dir)
    start = time.perf_counter()
    bundle = Bundle.open(bundle_dir)
    gen = Generator(bundle, threads=threads)
    load_s = time.perf_counter() - start
    check_context(bundle.manifest, prompt_tokens + gen_tokens, bundle_dir)
    ids = prompt_ids(bundle.tokenizer, prompt_tokens)
    time_one_run(gen, ids, gen_tokens)  # warm-up: first-run allocations, caches
    ttfts, steps, speeds = [], [], []
    for _ in range(repetitions):
        ttft, run_steps = time_one_run(gen, ids, gen_tokens)
        ttfts.append(ttft * 1000)
        steps += [s * 1000 for s in run_steps]
        if run_steps:
            speeds.append(len(run_steps) / sum(run_steps))
    settings = {"target": "local", "threads": threads, "prompt_tokens": prompt_tokens, "gen_tokens": gen_tokens,
                "repetitions": repetitions}
    return {"schema": RECORD_SCHEMA, "schema_version": RECORD_VERSION, **record, **settings,
            **timings(load_s, ttfts, steps, speeds), "peak_rss_mb": round(peak_rss_mb(), 1)}


def check_context(manifest: dict, n_tokens: int, bundle_dir: Path) -> None:
    """Refuse prompt + generation lengths beyond the model's context window."""
    limit = manifest.get("model", {}).get("context_length")
    if limit and n_tokens > limit:
        raise UserError(f"{bundle_dir}: prompt_tokens + gen_tokens = {n_tokens} exceeds the model's "
                        f"context_length {limit}; lower bench.prompt_tokens or bench.gen_tokens")


def timings(load_s: float, ttfts: list[float], steps: list[float], speeds: list[float]) -> dict:
    """The timing fields of a record, rounded for reading (ms to 0.01, tok/s to 0.1)."""
    out = {"load_s": round(load_s, 4),
           "ttft_ms_p50": round(percentile(ttfts, 50), 2), "ttft_ms_p90": round(percentile(ttfts, 90), 2)}
    if steps:
        out.update(decode_ms_p50=round(percentile(steps, 50), 3), decode_ms_p90=round(percentile(steps, 90), 3),
                   decode_tok_s_p50=round(percentile(speeds, 50), 1))
    else:  # gen_tokens == 1: nothing but prefill
        out.update(decode_ms_p50=None, decode_ms_p90=None, decode_tok_s_p50=None)
    return out


def measure_in_subprocess(bundle_dir: str | Path, threads: int, prompt_tokens: int, gen_tokens: int,
                          repetitions: int, timeout: float | None = None) -> dict:
    """Run `python -m benchmarks.measure` in a fresh interpreter and return its record."""
    cmd = [sys.executable, "-m", "benchmarks.measure", str(bundle_dir), "--threads", str(threads),
           "--prompt-tokens", str(prompt_tokens), "--gen-tokens", str(gen_tokens),
           "--repetitions", str(repetitions)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          cwd=Path(__file__).resolve().parent.parent)
    if proc.returncode == 2:  # a UserError in the child: pass its one line on
        raise UserError(proc.stderr.strip().splitlines()[-1].removeprefix("error: "))
    if proc.returncode != 0:
        raise RuntimeError(f"measuring {bundle_dir} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.measure", description=__doc__.split("\n")[0])
    p.add_argument("bundle", help="a bundle folder (with manifest.json)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--gen-tokens", type=int, default=32)
    p.add_argument("--repetitions", type=int, default=5)
    return p.parse_args(argv)


def check_settings(args: argparse.Namespace) -> None:
    """Reject settings that cannot be measured, naming the flag."""
    for flag in ("threads", "prompt_tokens", "gen_tokens", "repetitions"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')}: must be >= 1, got {getattr(args, flag)}")
    if not Path(args.bundle).is_dir():
        raise UserError(f"bundle folder not found: {args.bundle}; run `python -m export RECIPE` first")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    check_settings(args)
    record = measure_bundle(args.bundle, args.threads, args.prompt_tokens, args.gen_tokens, args.repetitions)
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    cli_main(main)
