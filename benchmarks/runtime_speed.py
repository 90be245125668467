"""Our runtime against onnxruntime-genai and a plain onnxruntime loop, on the same bundle, in one run.

    python -m edgestill.benchmarks.runtime_speed build/default/bundle-int8 [more bundles] \
        --threads 2 --prompt-tokens 128 --gen-tokens 64 --rounds 5 --repetitions 1 --out build/runtime_speed

Two kinds of measurement, all in subprocesses of this driver:
- speed: per bundle, one process loads every engine and runs `--rounds` rounds, each engine
  generating once per round in rotating order, so the timings of the engines are taken seconds
  apart and a shared machine's changing load hits them alike (compare ratios within one run);
- memory and load time: per bundle and engine, `--repetitions` fresh processes, so each peak
  RSS is that engine's alone (they also time one generation: `fresh_process_decode_ms_p50`).

Engines:

- `edgestill`: `runtime.Generator.stream_ids` (KV buffers preallocated and bound once with I/O
  binding, past and present sharing one buffer).
- `onnxruntime-genai`: `onnxruntime_genai` on the same folder, its own KV cache and greedy search,
  `threads` intra-op threads through a config overlay.
- `plain-ort`: a plain onnxruntime loop: `session.run` with numpy feeds, the presents copied
  out to numpy and fed back as the next step's past (what Optimum's ORTModelForCausalLM does on
  CPU, without its torch and generate() around it). Optimum itself needs transformers<4.58, so
  it is measured from a venv of its own by benchmarks/optimum_peer.py (`make optimum-peer`).

What is timed (token ids in, token ids out; no tokenizer, template or detokenizer):
TTFT = prefill of exactly `--prompt-tokens` ids of English text + the greedy pick of the first
token; decode = each later step (one token in, logits out, greedy pick), eos ignored,
`--gen-tokens` tokens. One untimed warm-up generation per engine and process first. Reported per
engine: the median over rounds of each generation's p50 ms/token (tokens/s = 1000 / that), TTFT
p50, the largest peak RSS (VmHWM) of the fresh processes and their RSS right after importing
numpy, onnxruntime and tokenizers (the same in every worker; the prompt ids come from the driver,
so only our runtime loads a tokenizer, as an app needs one). Writes `runtime_speed.json` and
`runtime_speed.md` to `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from edgestill.benchmarks.measure import peak_rss_mb
from edgestill.benchmarks.record import bundle_name, tool_record, write_records
from edgestill.errors import UserError, cli_main
from edgestill.files import atomic_write_json, atomic_write_text
from edgestill.machine import machine_info, one_line
from edgestill.markdown import table_text
from edgestill.worker import run_json

ENGINES = ("edgestill", "onnxruntime-genai", "plain-ort")
TEXT = ("The river rose slowly through the night, and by morning the low fields east of the village "
        "were under water. Farmers moved their animals to the hill behind the church, while the school "
        "opened its hall to families whose houses had flooded. Engineers from the regional office "
        "arrived at noon to inspect the old stone bridge, which had cracked in two places. They closed it "
        "to lorries and said repairs would take at least a month. ") * 40


# ------------------------------------------------------------------ engines (run inside a worker)

def _edgestill(bundle: Path, threads: int):
    from edgestill.runtime import Bundle, Generator

    gen = Generator(Bundle.open(bundle, verify=False), threads=threads)
    return lambda ids, n: gen.stream_ids(ids, n, ignore_eos=True)


def _genai(bundle: Path, threads: int):
    import onnxruntime_genai as og

    config = og.Config(str(bundle))
    config.overlay(json.dumps({"model": {"decoder": {"session_options": {
        "intra_op_num_threads": threads, "inter_op_num_threads": 1}}}}))
    model = og.Model(config)

    def run(ids, n):
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(ids) + n, min_length=len(ids) + n, do_sample=False)
        generator = og.Generator(model, params)
        generator.append_tokens(ids)
        for _ in range(n):
            generator.generate_next_token()
            yield int(generator.get_next_tokens()[0])
    return run


def _plain(bundle: Path, threads: int):
    import numpy as np
    import onnxruntime as ort

    from edgestill.runtime.engine import session_options

    manifest = json.loads((bundle / "manifest.json").read_text())["model"]
    session = ort.InferenceSession(str(bundle / manifest["onnx"]), session_options(threads),
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    empty = np.zeros((1, manifest["num_kv_heads"], 0, manifest["head_dim"]), dtype=np.float32)

    def run(ids, n):
        feeds = {i.name: empty for i in session.get_inputs() if i.name.startswith("past_key_values.")}
        feeds["input_ids"] = np.asarray([ids], dtype=np.int64)
        length = len(ids)
        for _ in range(n):
            feeds["attention_mask"] = np.ones((1, length), dtype=np.int64)
            out = dict(zip(names, session.run(names, feeds)))
            token = int(out.pop("logits")[0, -1].argmax())
            yield token
            feeds = {k.replace("present.", "past_key_values.", 1): v for k, v in out.items()}
            feeds["input_ids"] = np.asarray([[token]], dtype=np.int64)
            length += 1
    return run


LOADERS = {"edgestill": _edgestill, "onnxruntime-genai": _genai, "plain-ort": _plain}


def _timed(run, ids: list[int], n: int) -> tuple[float, list[float]]:
    """TTFT ms and per-token decode ms of one generation of `n` tokens."""
    stamps, start = [], time.perf_counter()
    for _ in run(ids, n):
        stamps.append(time.perf_counter())
    if len(stamps) != n:
        raise RuntimeError(f"engine gave {len(stamps)} tokens, expected {n}")
    return (stamps[0] - start) * 1e3, [(b - a) * 1e3 for a, b in zip(stamps, stamps[1:])]


def prompt_ids(bundle: Path, prompt_tokens: int) -> list[int]:
    """The first `prompt_tokens` ids of TEXT with the bundle's tokenizer (computed by the driver, so
    no worker holds a tokenizer it would not need: ours loads its own, as an app would)."""
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(bundle / "tokenizer.json")).encode(TEXT, add_special_tokens=False).ids
    if len(ids) < prompt_tokens:
        raise UserError(f"--prompt-tokens {prompt_tokens}: the benchmark text has only {len(ids)} tokens")
    return ids[:prompt_tokens]


def worker(engine: str, bundle: Path, threads: int, ids: list[int], gen_tokens: int) -> dict:
    """Load `engine` on `bundle`, warm up, time one generation of `gen_tokens` after `ids`; one result dict."""
    import numpy as np  # noqa: F401  (the same imports in every worker: counted in the import RSS)
    import onnxruntime  # noqa: F401
    import tokenizers  # noqa: F401

    rss_imports = peak_rss_mb()
    start = time.perf_counter()
    run = LOADERS[engine](bundle, threads)
    load_s = time.perf_counter() - start
    _timed(run, ids[:16], 8)  # warm-up
    ttft, steps = _timed(run, ids, gen_tokens)
    return {"engine": engine, "bundle": str(bundle), "load_s": round(load_s, 3), "ttft_ms": round(ttft, 2),
            "decode_ms_p50": round(statistics.median(steps), 3), "decode_ms": [round(s, 3) for s in steps],
            "rss_after_imports_mb": round(rss_imports, 1), "peak_rss_mb": round(peak_rss_mb(), 1)}


def interleaved(bundle: Path, threads: int, ids: list[int], gen_tokens: int, engines: list[str],
                rounds: int) -> list[dict]:
    """All `engines` loaded in one process, one generation each per round, order rotating: timings
    taken seconds apart, so a shared machine's changing load hits every engine alike."""
    runs = {engine: LOADERS[engine](bundle, threads) for engine in engines}
    for run in runs.values():
        _timed(run, ids[:16], 8)  # warm-up
    out = []
    for r in range(rounds):
        for engine in engines[r % len(engines):] + engines[:r % len(engines)]:
            ttft, steps = _timed(runs[engine], ids, gen_tokens)
            out.append({"engine": engine, "bundle": str(bundle), "round": r, "ttft_ms": round(ttft, 2),
                        "decode_ms_p50": round(statistics.median(steps), 3)})
    return out


# ------------------------------------------------------------------ the driver

def _measure(engine: str, bundle: Path, args: argparse.Namespace):
    """Run a worker (`engine`, or "all" for the interleaved speed rounds) in a fresh process."""
    ids = ",".join(map(str, prompt_ids(bundle, args.prompt_tokens)))
    cmd = [sys.executable, "-m", "edgestill.benchmarks.runtime_speed", "--worker", engine, str(bundle),
           "--threads", str(args.threads), "--ids", ids, "--gen-tokens", str(args.gen_tokens),
           "--rounds", str(args.rounds), "--engines", *args.engines]
    return run_json(cmd, f"{engine} on {bundle}")


def _budget_mb(bundle: Path, prompt_tokens: int, gen_tokens: int) -> dict:
    manifest = json.loads((bundle / "manifest.json").read_text())
    m = manifest["model"]
    file_bytes = sum(f["bytes"] for f in manifest["files"].values())
    kv = 2 * m["num_layers"] * m["num_kv_heads"] * m["head_dim"] * (prompt_tokens + gen_tokens) * 4
    return {"file_mb": round(file_bytes / 2**20, 1), "kv_mb": round(kv / 2**20, 2),
            "rss_budget_mb": round((file_bytes + kv) / 2**20 + 60, 1), "precision": manifest.get("precision")}


def summarize(runs: list[dict], rounds: list[dict], bundles: list[Path], args: argparse.Namespace) -> list[dict]:
    """One row per bundle x engine: speed from the interleaved rounds (else the fresh processes),
    load time and memory from the fresh processes, speed-up of ours over each engine."""
    rows = []
    for bundle in bundles:
        budget = _budget_mb(bundle, args.prompt_tokens, args.gen_tokens)
        for engine in args.engines:
            mine = [r for r in runs if r["engine"] == engine and r["bundle"] == str(bundle)]
            timed = [r for r in rounds if r["engine"] == engine and r["bundle"] == str(bundle)] or mine
            p50 = statistics.median(r["decode_ms_p50"] for r in timed)
            rows.append({"bundle": bundle.name, "engine": engine, **budget, "runs": len(mine), "rounds": len(timed),
                         "decode_ms_p50": round(p50, 3), "decode_tok_s_p50": round(1000 / p50, 1),
                         "decode_ms_rounds": [r["decode_ms_p50"] for r in timed],
                         "ttft_ms_p50": round(statistics.median(r["ttft_ms"] for r in timed), 1),
                         "fresh_process_decode_ms_p50": round(statistics.median(r["decode_ms_p50"] for r in mine), 3),
                         "load_s_p50": round(statistics.median(r["load_s"] for r in mine), 3),
                         "peak_rss_mb": max(r["peak_rss_mb"] for r in mine),
                         "rss_after_imports_mb": max(r["rss_after_imports_mb"] for r in mine)})
        ours = next(r for r in rows if r["bundle"] == bundle.name and r["engine"] == "edgestill")
        for row in rows:
            if row["bundle"] == bundle.name:
                row["edgestill_speedup"] = round(row["decode_ms_p50"] / ours["decode_ms_p50"], 2)
    return rows


COLUMNS = ("bundle", "engine", "decode tok/s p50", "ms/token p50", "edgestill speed-up", "TTFT ms p50", "load s",
           "peak RSS MB", "RSS after imports MB", "RSS budget MB")


def table_row(r: dict) -> list:
    return [r["bundle"], r["engine"], r["decode_tok_s_p50"], r["decode_ms_p50"], f"{r['edgestill_speedup']}x",
            r["ttft_ms_p50"], r["load_s_p50"], r["peak_rss_mb"], r["rss_after_imports_mb"], r["rss_budget_mb"]]


def markdown(rows: list[dict], meta: dict) -> str:
    return (f"# Runtime speed ({meta['machine']}, {meta['threads']} threads, {meta['prompt_tokens']}-token "
            f"prompt, {meta['gen_tokens']} generated; speed: median of {meta['rounds']} interleaved rounds in one process; memory: {meta['repetitions']} fresh process(es) per engine)\n\n"
            f"{table_text(COLUMNS, [table_row(r) for r in rows])}\n"
            f"'edgestill speed-up' = that engine's ms/token / ours (>1: ours is faster). RSS budget = "
            f"bundle files + KV cache + 60 MB. Load average before/after: {meta['load_before']} / "
            f"{meta['load_after']}. Optimum is not installed; plain-ort stands in for it.\n")


ENGINE_NAMES = {"edgestill": "edgestill-runtime"}  # the record's engine (record.schema.json)


def record(r: dict, bundle: Path, args: argparse.Namespace, machine: dict) -> dict:
    """One row (bundle x engine) as a benchmark record (benchmarks/record.schema.json)."""
    settings = {"engine": ENGINE_NAMES.get(r["engine"], r["engine"]), "threads": args.threads,
                "prompt_tokens": args.prompt_tokens, "gen_tokens": args.gen_tokens,
                "repetitions": max(r["runs"], 1), "rounds": r["rounds"]}
    return tool_record("runtime_speed", bundle_name(bundle), str(bundle), settings, machine, precision=r["precision"],
                       load_s=r["load_s_p50"], ttft_ms_p50=r["ttft_ms_p50"], decode_ms_p50=r["decode_ms_p50"],
                       decode_tok_s_p50=r["decode_tok_s_p50"], peak_rss_mb=r["peak_rss_mb"],
                       rss_after_imports_mb=r["rss_after_imports_mb"],
                       decode_ms_ratio_vs={"edgestill-runtime": r["edgestill_speedup"]},
                       figures={k: r[k] for k in ("file_mb", "kv_mb", "rss_budget_mb", "fresh_process_decode_ms_p50")})


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="edgestill runtime-speed", description=__doc__.split("\n")[0])
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--gen-tokens", type=int, default=64)
    parser.add_argument("--repetitions", type=int, default=1, help="fresh processes per engine (memory, load)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved speed rounds in one process (0: none)")
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    parser.add_argument("--out", type=Path, default=Path("build/runtime_speed"))
    parser.add_argument("--worker", choices=ENGINES + ("all",), help=argparse.SUPPRESS)
    parser.add_argument("--ids", help=argparse.SUPPRESS)  # the worker's prompt ids, comma-separated
    args = parser.parse_args(argv)
    if args.worker:
        ids = [int(t) for t in args.ids.split(",")]
        if args.worker == "all":
            result = interleaved(args.bundles[0], args.threads, ids, args.gen_tokens, args.engines, args.rounds)
        else:
            result = worker(args.worker, args.bundles[0], args.threads, ids, args.gen_tokens)
        print(json.dumps(result))
        return 0
    for bundle in args.bundles:
        if not (bundle / "manifest.json").is_file():
            raise UserError(f"{bundle}: not a bundle (no manifest.json); give a folder such as build/default/bundle-int8")
    machine, load_before, runs = machine_info(), os.getloadavg()[0], []
    for rep in range(args.repetitions):
        order = args.engines[rep % len(args.engines):] + args.engines[:rep % len(args.engines)]
        for bundle in args.bundles:
            for engine in order:
                runs.append(_measure(engine, bundle, args))
                print(f"rep {rep + 1} {bundle.name} {engine}: {runs[-1]['decode_ms_p50']} ms/token, "
                      f"TTFT {runs[-1]['ttft_ms']} ms, peak RSS {runs[-1]['peak_rss_mb']} MB", file=sys.stderr)
    rounds = []
    for bundle in args.bundles if args.rounds > 0 else []:
        rounds += _measure("all", bundle, args)
        print(f"{bundle.name}: {args.rounds} interleaved rounds done", file=sys.stderr)
    meta = {"machine": one_line(machine), "threads": args.threads, "prompt_tokens": args.prompt_tokens,
            "gen_tokens": args.gen_tokens, "repetitions": args.repetitions, "rounds": args.rounds,
            "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2)}
    rows = summarize(runs, rounds, args.bundles, args)
    atomic_write_json(args.out / "runtime_speed.json", {"meta": meta, "rows": rows, "runs": runs, "rounds": rounds})
    atomic_write_text(args.out / "runtime_speed.md", markdown(rows, meta))
    paths = {b.name: b for b in args.bundles}
    write_records(args.out / "records.jsonl", [record(r, paths[r["bundle"]], args, machine) for r in rows])
    print(markdown(rows, meta))
    return 0


if __name__ == "__main__":
    cli_main(main)
