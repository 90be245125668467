"""Our runtime against Optimum's ORTModelForCausalLM on the same student, in one run.

Optimum's ORTModelForCausalLM is the runtime's speed peer. Optimum (optimum-onnx 0.1.0) pins transformers<4.58, which our pipeline cannot use (transformers 5), so
this script runs in a venv of its own, `.venv-optimum` (`make optimum-venv`), and is the only
code that does:

    make optimum-peer                      # = the two lines below, on build/default
    .venv-optimum/bin/python -m edgestill.benchmarks.optimum_peer build/default/student \
        build/default/bundle-fp32 build/default/bundle-int8 --threads 2 --rounds 7 \
        --out build/default/optimum_peer

What it does:
1. engines: our runtime on each bundle; Optimum's ORTModelForCausalLM on each *same* bundle (it
   loads the bundle's model.onnx unchanged from a folder of links plus the student's config.json,
   and gives our greedy ids); and what an Optimum user would otherwise run: the student exported
   by Optimum's own exporter (`optimum.exporters.onnx.main_export`, text-generation-with-past)
   into `--out/optimum-export-fp32`, and that quantized by Optimum's `ORTQuantizer` (dynamic
   int8, AVX2 config, per-channel) into `--out/optimum-export-int8`;
2. speed, one process: every engine loaded, `--rounds` rounds, each engine generating once per
   round in rotating order (ratios within one run are what count on a shared machine). Each
   generation: the same `--prompt-tokens` ids of English text (benchmarks.runtime_speed.TEXT),
   greedy, `--gen-tokens` new tokens, eos ignored. Ours: `runtime.Generator.stream_ids` on each
   bundle. Optimum: `ORTModelForCausalLM.generate` with a streamer that stamps each token (the
   library's own loop: numpy/torch feeds, presents re-fed each step). TTFT = prompt in -> first
   token out; decode = the p50 of the gaps between later tokens;
3. memory, one fresh process per engine (`--worker`): peak RSS (VmHWM) after loading and
   one generation; Optimum's includes the torch + transformers it imports, as in an app using it.

It also checks that Optimum's greedy ids agree with ours (`same_ids`: on our bundle, with ours on
that bundle; on its exports, with our fp32 bundle).
Writes `optimum_peer.json` and `optimum_peer.md` to `--out`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from edgestill.benchmarks.measure import peak_rss_mb
from edgestill.benchmarks.record import bundle_name, tool_record, write_records
from edgestill.benchmarks.runtime_speed import _edgestill, prompt_ids
from edgestill.errors import UserError, cli_main
from edgestill.files import atomic_write_json, atomic_write_text
from edgestill.machine import machine_info, one_line
from edgestill.markdown import table
from edgestill.worker import run_json

# ------------------------------------------------------------------ building Optimum's models

def optimum_exports(student: Path, out: Path) -> dict[str, Path]:
    """Optimum's fp32 export of `student` and its dynamic-int8 quantization (made once, kept)."""
    from optimum.exporters.onnx import main_export
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    fp32, int8 = out / "optimum-export-fp32", out / "optimum-export-int8"
    if not (fp32 / "model.onnx").is_file():
        main_export(str(student), output=fp32, task="text-generation-with-past", do_validation=False)
    if not (int8 / "model_quantized.onnx").is_file():
        quantizer = ORTQuantizer.from_pretrained(fp32, file_name="model.onnx")
        quantizer.quantize(AutoQuantizationConfig.avx2(is_static=False, per_channel=True), save_dir=int8)
    return {"optimum export fp32": fp32, "optimum export int8": int8}


def bundle_view(bundle: Path, student: Path, out: Path) -> Path:
    """A folder Optimum loads our bundle from, unchanged: links to the bundle's files plus the
    student's config.json (ORTModelForCausalLM wants one; the bundle's graph needs nothing else:
    it re-feeds the presents, which GroupQueryAttention then concatenates instead of sharing)."""
    view = out / f"optimum-view-{bundle.name}"
    view.mkdir(parents=True, exist_ok=True)
    for f in bundle.iterdir():
        link = view / f.name
        if not link.exists():
            link.symlink_to(f.resolve())
    (view / "config.json").write_bytes((student / "config.json").read_bytes())
    return view


# ------------------------------------------------------------------ engines
# Each loader returns run(ids, n) -> (the n greedy ids, the perf_counter time each arrived).

def _ours(bundle: Path, threads: int):
    stream = _edgestill(bundle, threads)  # the same engine benchmarks.runtime_speed measures

    def run(ids, n):
        tokens, stamps = [], []
        for token in stream(ids, n):
            stamps.append(time.perf_counter())
            tokens.append(int(token))
        return tokens, stamps
    return run


def _optimum(folder: Path, threads: int):
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM

    from edgestill.runtime.engine import session_options

    torch.set_num_threads(threads)
    name = "model_quantized.onnx" if (folder / "model_quantized.onnx").is_file() else "model.onnx"
    model = ORTModelForCausalLM.from_pretrained(folder, file_name=name, session_options=session_options(threads),
                                                provider="CPUExecutionProvider", use_cache=True)

    class Stamps:  # transformers' streamer protocol: put(the prompt ids), then put(each new token)
        def __init__(self):
            self.tokens, self.stamps, self.prompt_seen = [], [], False

        def put(self, value):
            if self.prompt_seen:
                self.stamps.append(time.perf_counter())
                self.tokens.append(int(value.reshape(-1)[-1]))
            self.prompt_seen = True

        def end(self):
            pass

    def run(ids, n):
        x, streamer = torch.tensor([ids], dtype=torch.long), Stamps()
        model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n,
                       do_sample=False, streamer=streamer, pad_token_id=0)
        return streamer.tokens, streamer.stamps
    return run


def _timed(run, ids: list[int], n: int) -> dict:
    start = time.perf_counter()
    tokens, stamps = run(ids, n)
    if len(tokens) != n:
        raise RuntimeError(f"engine gave {len(tokens)} tokens, expected {n}")
    steps = [(b - a) * 1e3 for a, b in zip(stamps, stamps[1:])]
    return {"ttft_ms": round((stamps[0] - start) * 1e3, 2), "decode_ms_p50": round(statistics.median(steps), 3),
            "tokens": tokens}


def load(engine: str, path: Path, threads: int):
    return (_optimum if engine.startswith("optimum") else _ours)(path, threads)


def engines_for(student: Path, bundles: list[Path], out: Path) -> dict[str, Path]:
    """Engine name -> folder: ours on each bundle, Optimum on each same bundle, Optimum's own exports."""
    engines = {f"edgestill {_precision(b)}": b for b in bundles}
    engines.update({f"optimum on our {_precision(b)}": bundle_view(b, student, out) for b in bundles})
    engines.update(optimum_exports(student, out))
    return engines


def interleaved(engines: dict[str, Path], threads: int, ids: list[int], n: int, rounds: int) -> list[dict]:
    """All engines in this process, one generation each per round, the order rotating."""
    runs = {e: load(e, p, threads) for e, p in engines.items()}
    for run in runs.values():
        _timed(run, ids[:16], 8)  # warm-up
    names, out = list(runs), []
    for r in range(rounds):
        for e in names[r % len(names):] + names[:r % len(names)]:
            out.append({"engine": e, "round": r, **_timed(runs[e], ids, n)})
    return out


def worker(engine: str, path: Path, threads: int, ids: list[int], n: int) -> dict:
    """One engine alone in this process: load time, one warm-up, one timed generation, peak RSS."""
    start = time.perf_counter()
    run = load(engine, path, threads)
    load_s = time.perf_counter() - start
    _timed(run, ids[:16], 8)
    timed = _timed(run, ids, n)
    return {"engine": engine, "load_s": round(load_s, 3), "peak_rss_mb": round(peak_rss_mb(), 1),
            "fresh_process_decode_ms_p50": timed["decode_ms_p50"]}


# ------------------------------------------------------------------ the driver

def _fresh(engine: str, path: Path, args, ids: list[int]) -> dict:
    cmd = [sys.executable, "-m", "edgestill.benchmarks.optimum_peer", "--worker", engine, str(path),
           "--threads", str(args.threads), "--gen-tokens", str(args.gen_tokens), "--ids", ",".join(map(str, ids))]
    return run_json(cmd, f"{engine} on {path}")


def summarize(rounds: list[dict], fresh: list[dict], engines: dict[str, Path]) -> list[dict]:
    """One row per engine: medians over rounds, speed ratios against our fp32 and int8 bundles."""
    rows = []
    for e, path in engines.items():
        mine = [r for r in rounds if r["engine"] == e]
        rows.append({"engine": e, "model": str(path),
                     "decode_ms_p50": round(statistics.median(r["decode_ms_p50"] for r in mine), 3),
                     "ttft_ms_p50": round(statistics.median(r["ttft_ms"] for r in mine), 1),
                     **{k: v for f in fresh if f["engine"] == e for k, v in f.items() if k != "engine"}})
    ms = {r["engine"]: r["decode_ms_p50"] for r in rows}
    for r in rows:
        r["tokens_per_s"] = round(1e3 / r["decode_ms_p50"], 1)
        for ours in ("edgestill fp32", "edgestill int8"):
            if ours in ms:
                r[f"speedup_of_{ours}"] = round(r["decode_ms_p50"] / ms[ours], 2)
    return rows


def same_ids(rounds: list[dict]) -> dict[str, bool]:
    """Whether each Optimum engine's greedy ids (first round) equal ours: on our bundle, those of
    our runtime on that bundle; on Optimum's exports, those of our fp32 bundle."""
    first = {r["engine"]: r["tokens"] for r in reversed(rounds)}
    out = {}
    for e, tokens in first.items():
        ref = "edgestill " + e.rsplit(" ", 1)[-1] if e.startswith("optimum on our") else "edgestill fp32"
        if e.startswith("optimum") and ref in first:
            out[e] = tokens == first[ref]
    return out


COLUMNS = ("engine", "decode tok/s", "ms/token", "x ours fp32", "x ours int8", "TTFT ms", "load s", "peak RSS MB")


def table_row(r: dict) -> list:
    return [r["engine"], r["tokens_per_s"], r["decode_ms_p50"], r.get("speedup_of_edgestill fp32"),
            r.get("speedup_of_edgestill int8"), r["ttft_ms_p50"], r.get("load_s"), r.get("peak_rss_mb")]


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [f"# Our runtime vs Optimum's ORTModelForCausalLM ({meta['machine']})", "",
             f"{meta['prompt_tokens']}-token prompt, {meta['gen_tokens']} generated, {meta['threads']} threads, "
             f"{meta['rounds']} interleaved rounds. `x ours` = that engine's ms/token / ours (>1: ours faster).", "",
             *table(COLUMNS, [table_row(r) for r in rows])]
    lines += ["", f"Optimum's greedy ids equal to ours (on our bundle: ours on that bundle; its exports: our fp32 "
                  f"bundle): {meta['same_ids']}", ""]
    return "\n".join(lines)


def record(r: dict, meta: dict, machine: dict) -> dict:
    """One engine's row as a benchmark record (benchmarks/record.schema.json)."""
    ours = r["engine"].startswith("edgestill")
    settings = {"engine": "edgestill-runtime" if ours else "optimum-onnxruntime", "threads": meta["threads"],
                "prompt_tokens": meta["prompt_tokens"], "gen_tokens": meta["gen_tokens"],
                "repetitions": max(meta["rounds"], 1), "rounds": meta["rounds"]}
    name = bundle_name(r["model"]) if ours else r["engine"]  # Optimum's rows: what ran on which files
    return tool_record("optimum_peer", name, r["model"], settings, machine, precision=r["engine"].rsplit(" ", 1)[-1],
                       load_s=r.get("load_s"), ttft_ms_p50=r["ttft_ms_p50"], decode_ms_p50=r["decode_ms_p50"],
                       decode_tok_s_p50=r["tokens_per_s"], peak_rss_mb=r.get("peak_rss_mb"),
                       decode_ms_ratio_vs={k.removeprefix("speedup_of_"): v for k, v in r.items()
                                           if k.startswith("speedup_of_")},
                       figures={"fresh_process_decode_ms_p50": r.get("fresh_process_decode_ms_p50"),
                                "same_ids_as_ours": meta["same_ids"].get(r["engine"])})


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m edgestill.benchmarks.optimum_peer", description=__doc__.split("\n")[0])
    p.add_argument("student", type=Path, help="the student folder (Hugging Face checkpoint)")
    p.add_argument("bundles", type=Path, nargs="*", help="our bundles of that student (fp32 and/or int8)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--gen-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--no-memory", action="store_true", help="skip the fresh-process memory runs")
    p.add_argument("--out", type=Path, default=Path("build/optimum_peer"))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--ids", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.student, args.threads, list(map(int, args.ids.split(","))),
                                args.gen_tokens)))
        return 0
    try:
        import optimum.onnxruntime  # noqa: F401
    except ImportError:
        raise UserError("Optimum is not installed in this Python: run this script with .venv-optimum/bin/python "
                        "(make optimum-venv creates it)") from None
    if not (args.student / "config.json").is_file():
        raise UserError(f"{args.student}: not a student folder (no config.json); pass build/<name>/student")
    engines, machine = engines_for(args.student, args.bundles, args.out), machine_info()
    ids = prompt_ids(args.bundles[0] if args.bundles else args.student, args.prompt_tokens)
    rounds = interleaved(engines, args.threads, ids, args.gen_tokens, args.rounds)
    fresh = [] if args.no_memory else [_fresh(e, path, args, ids) for e, path in engines.items()]
    meta = {"machine": one_line(machine), "threads": args.threads, "prompt_tokens": args.prompt_tokens,
            "gen_tokens": args.gen_tokens, "rounds": args.rounds, "same_ids": same_ids(rounds)}
    rows = summarize(rounds, fresh, engines)
    atomic_write_json(args.out / "optimum_peer.json", {**meta, "rows": rows,
                                                       "rounds": [{k: v for k, v in r.items() if k != "tokens"}
                                                                  for r in rounds]})
    text = markdown(rows, meta)
    atomic_write_text(args.out / "optimum_peer.md", text)
    write_records(args.out / "records.jsonl", [record(r, meta, machine) for r in rows])
    print(text)
    return 0


def _precision(bundle: Path) -> str:
    try:
        return json.loads((bundle / "manifest.json").read_text())["precision"]
    except (OSError, ValueError, KeyError) as err:
        raise UserError(f"{bundle}: not a bundle ({err}); pass build/<name>/bundle-fp32 or bundle-int8") from None


if __name__ == "__main__":
    sys.exit(cli_main(main))
