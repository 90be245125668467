"""Measure one model with one engine and one setting, alone in its own process: one record.

    python -m edgestill.benchmarks.measure build/default/bundle-int8 --threads 2 \
        --prompt-tokens 64 --gen-tokens 32 --repetitions 5 [--engine onnxruntime-genai] [--no-pin]

prints one JSON record (benchmarks/record.schema.json) on stdout. Run it as a fresh subprocess
(`measure_in_subprocess`) so the peak RSS is this model's alone. The same module runs on an ssh
board (copied there with the runtime). What is timed:

- `load_s`: opening the model: for our runtime `Bundle.open` (reads and sha256-checks every
  file, loads the tokenizer) + `Generator` (session creation); for peers their model constructor.
- `ttft_ms_*`: prefill of exactly `prompt_tokens` ids of real English text + the greedy pick of
  the first token, i.e. the wait until `stream_ids` yields its first id (tokenization and the
  chat template are outside); `warmup` untimed runs, then `repetitions` timed runs, p50/p90.
- `decode_ms_*`: the time between consecutive ids after the first (one decode step + greedy
  pick each), `gen_tokens` ids per run with eos ignored, p50/p90 over every step of every run;
  `decode_tok_s_p50|min|max`: median, slowest and fastest run of (steps / decode time).
- `peak_rss_mb`: this process's peak RSS at the end (`peak_rss_mb()`: VmHWM on Linux).
- hygiene: the process is pinned to `threads` CPUs (`--no-pin` to leave it), and the record
  says how much CPU other processes used meanwhile (`others_cpu_pct`) and flags a noisy run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from edgestill.errors import UserError, cli_main
from edgestill.worker import run_json

RECORD_SCHEMA = "edgestill-bench-record"
RECORD_VERSION = 1
NOISY_SPREAD = 0.15  # decode tok/s (max - min) / median above this flags the run
NOISY_OTHERS_PCT = 10.0  # other processes using more than this % of the machine's CPU flags the run
TIMING_SCOPE = {
    "edgestill-runtime": "runtime.Generator.stream_ids on token ids: prefill + greedy pick (TTFT), then one "
                         "decode step + greedy pick per token; no tokenization, no chat template, no detokenization",
    "onnxruntime-genai": "onnxruntime_genai Generator: append_tokens (prefill) + first greedy token (TTFT), then "
                         "generate_next_token per token; no tokenization, no chat template",
    "transformers-eager": "PyTorch forward with KV cache (eager attention, fp32) + argmax: prefill (TTFT), then one "
                          "forward per token; no tokenization, no chat template",
    "llama.cpp": "llama-cpp-python Llama.eval on token ids + argmax over the logits: prefill (TTFT), then one eval "
                 "per token; no tokenization, no chat template, no sampler",
}

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
    """Peak resident set size of this process in MB.

    On Linux, VmHWM from /proc/self/status: `ru_maxrss` survives execve, so a measuring process
    started by a driver that had grown larger would report the driver's peak, not its own
    (measured: a child of a 500 MB parent reads 514 MB from ru_maxrss, 13 MB from VmHWM).
    Elsewhere ru_maxrss (bytes on macOS, KiB on the BSDs)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1 << 20) if sys.platform == "darwin" else rss / 1024


def manifest_facts(bundle_dir: Path) -> dict:
    """What the record takes from `manifest.json`: identity, size, precision, role, params."""
    path = bundle_dir / "manifest.json"
    if not path.is_file():
        raise UserError(f"{bundle_dir}: no manifest.json; not a bundle (run `edgestill export RECIPE`)")
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


def pin_cpus(threads: int) -> list[int] | None:
    """Pin this process to its first `threads` allowed CPUs; the CPU ids, or None where not possible."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    chosen = allowed[:threads]
    os.sched_setaffinity(0, chosen)
    return chosen


def busy_cpu_seconds() -> float | None:
    """CPU seconds every process on the machine has used (user + system + ...), None without psutil."""
    try:
        import psutil
    except ImportError:
        return None
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def others_cpu_pct(busy0: float | None, own0: float, wall: float) -> float | None:
    """% of the machine's CPU time that other processes used during `wall` seconds."""
    busy1 = busy_cpu_seconds()
    if busy0 is None or busy1 is None or wall <= 0:
        return None
    others = (busy1 - busy0) - (own_cpu_seconds() - own0)
    return round(max(0.0, others) / (wall * (os.cpu_count() or 1)) * 100, 1)


def noise_reasons(record: dict) -> list[str]:
    """Why this record looks disturbed: a wide spread between runs, or other work on the machine."""
    reasons = []
    lo, hi, mid = record.get("decode_tok_s_min"), record.get("decode_tok_s_max"), record.get("decode_tok_s_p50")
    if lo and hi and mid and (hi - lo) / mid > NOISY_SPREAD:
        reasons.append(f"decode tok/s min-max spread {(hi - lo) / mid:.0%} of the median ({lo}-{hi})")
    others = record.get("others_cpu_pct")
    if others is not None and others > NOISY_OTHERS_PCT:
        reasons.append(f"other processes used {others:.0f}% of the machine's CPU during the run")
    return reasons


def model_facts(path: Path, engine: str, name: str | None, role: str | None) -> dict:
    """Identity, size and params of what is measured (a bundle's manifest, or an HF folder's files)."""
    if engine == "transformers-eager":
        from edgestill.benchmarks.peers import hf_facts

        return hf_facts(path, name, role or "teacher")
    if engine == "llama.cpp" and path.is_file():
        from edgestill.benchmarks.peers import gguf_facts

        return gguf_facts(path, name, role)
    facts = manifest_facts(path)
    return facts | ({"name": name} if name else {}) | ({"role": role} if role else {})


def measure_bundle(bundle_dir: str | Path, threads: int, prompt_tokens: int, gen_tokens: int,
                   repetitions: int, engine: str = "edgestill-runtime", warmup: int = 1,
                   target: str = "local", pin: bool = True, name: str | None = None,
                   role: str | None = None) -> dict:
    """Measure load, TTFT, decode speed and peak RSS of one model in this process; one record."""
    from edgestill.benchmarks.peers import open_engine
    from edgestill.machine import machine_info

    bundle_dir = Path(bundle_dir)
    record = model_facts(bundle_dir, engine, name, role)
    pinned = pin_cpus(threads) if pin else None
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    machine = machine_info()
    busy0, own0, wall0 = busy_cpu_seconds(), own_cpu_seconds(), time.perf_counter()
    start = time.perf_counter()
    gen, tokenizer = open_engine(engine, bundle_dir, threads, n_ctx=prompt_tokens + gen_tokens + 8)
    load_s = time.perf_counter() - start
    if engine == "transformers-eager":
        record["params"] = gen.params()
    elif engine != "llama.cpp":
        check_context(json.loads((bundle_dir / "manifest.json").read_text(encoding="utf-8")),
                      prompt_tokens + gen_tokens, bundle_dir)
    ids = prompt_ids(tokenizer, prompt_tokens)
    for _ in range(warmup):  # first-run allocations, caches
        time_one_run(gen, ids, gen_tokens)
    ttfts, steps, speeds = [], [], []
    for _ in range(repetitions):
        ttft, run_steps = time_one_run(gen, ids, gen_tokens)
        ttfts.append(ttft * 1000)
        steps += [s * 1000 for s in run_steps]
        if run_steps:
            speeds.append(len(run_steps) / sum(run_steps))
    settings = {"engine": engine, "engine_version": engine_version(engine), "target": target,
                "threads": threads, "pinned_cpus": pinned, "prompt_tokens": prompt_tokens,
                "gen_tokens": gen_tokens, "warmup": warmup, "repetitions": repetitions}
    out = {"schema": RECORD_SCHEMA, "schema_version": RECORD_VERSION, "status": "ok", "error": None, **record,
           **settings, **timings(load_s, ttfts, steps, speeds), "peak_rss_mb": round(peak_rss_mb(), 1),
           "others_cpu_pct": others_cpu_pct(busy0, own0, time.perf_counter() - wall0),
           "timing_scope": TIMING_SCOPE[engine], "started_at": started_at, "machine": machine}
    out["prefill_tok_s_p50"] = round(prompt_tokens / out["ttft_ms_p50"] * 1000, 1) if out["ttft_ms_p50"] else None
    out["noise"] = noise_reasons(out)
    out["noisy"] = bool(out["noise"])
    return out


def engine_version(engine: str) -> str | None:
    """The version of the package that runs `engine` (edgestill's own for our runtime)."""
    from edgestill.machine import package_version

    package = {"edgestill-runtime": "edgestill", "onnxruntime-genai": "onnxruntime-genai",
               "transformers-eager": "transformers", "llama.cpp": "llama_cpp_python"}.get(engine)
    return package_version(package) if package else None


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
                   decode_tok_s_p50=round(percentile(speeds, 50), 1), decode_tok_s_min=round(min(speeds), 1),
                   decode_tok_s_max=round(max(speeds), 1))
    else:  # gen_tokens == 1: nothing but prefill
        out.update(decode_ms_p50=None, decode_ms_p90=None, decode_tok_s_p50=None, decode_tok_s_min=None,
                   decode_tok_s_max=None)
    return out


def measure_args(bundle_dir: str | Path, threads: int, prompt_tokens: int, gen_tokens: int, repetitions: int,
                 engine: str = "edgestill-runtime", warmup: int = 1, target: str = "local", pin: bool = True,
                 name: str | None = None, role: str | None = None) -> list[str]:
    """The `python -m edgestill.benchmarks.measure ...` arguments for one record (also used on ssh boards)."""
    args = [str(bundle_dir), "--threads", str(threads), "--prompt-tokens", str(prompt_tokens),
            "--gen-tokens", str(gen_tokens), "--repetitions", str(repetitions), "--warmup", str(warmup),
            "--engine", engine, "--target", target]
    args += [] if pin else ["--no-pin"]
    args += ["--name", name] if name else []
    args += ["--role", role] if role else []
    return args


def measure_in_subprocess(bundle_dir: str | Path, threads: int, prompt_tokens: int, gen_tokens: int,
                          repetitions: int, timeout: float | None = None, **options) -> dict:
    """Run `python -m edgestill.benchmarks.measure` in a fresh interpreter and return its record;
    UserError (the child's one line) or WorkerError (a crash, one line: it goes into an error record)."""
    cmd = [sys.executable, "-m", "edgestill.benchmarks.measure",
           *measure_args(bundle_dir, threads, prompt_tokens, gen_tokens, repetitions, **options)]
    return run_json(cmd, f"measuring {bundle_dir}", timeout=timeout, tail_chars=0)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m edgestill.benchmarks.measure", description=__doc__.split("\n")[0])
    p.add_argument("bundle", help="a bundle folder (with manifest.json), or an HF folder for transformers-eager")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--gen-tokens", type=int, default=32)
    p.add_argument("--repetitions", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1, help="untimed runs before the timed ones (default 1)")
    p.add_argument("--engine", default="edgestill-runtime", choices=sorted(TIMING_SCOPE))
    p.add_argument("--target", default="local", help="written into the record (the parent's target)")
    p.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin the process to `threads` CPUs")
    p.add_argument("--name", help="the record's name (default: the manifest's)")
    p.add_argument("--role", choices=["teacher", "student"], help="the record's role (default: the manifest's)")
    return p.parse_args(argv)


def check_settings(args: argparse.Namespace) -> None:
    """Reject settings that cannot be measured, naming the flag."""
    for flag in ("threads", "prompt_tokens", "gen_tokens", "repetitions"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')}: must be >= 1, got {getattr(args, flag)}")
    if args.warmup < 0:
        raise UserError(f"--warmup: must be >= 0, got {args.warmup}")
    if not Path(args.bundle).is_dir() and not (args.engine == "llama.cpp" and Path(args.bundle).is_file()):
        raise UserError(f"bundle folder not found: {args.bundle}; run `edgestill export RECIPE` first")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    check_settings(args)
    record = measure_bundle(args.bundle, args.threads, args.prompt_tokens, args.gen_tokens, args.repetitions,
                            engine=args.engine, warmup=args.warmup, target=args.target, pin=args.pin,
                            name=args.name, role=args.role)
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    cli_main(main)
