"""Prompt-lookup decoding (runtime/lookup.py) against plain greedy decoding, on the task's own inputs.

    python -m edgestill.benchmarks.lookup_speed build/default/bundle-int8 --data build/default/data/teacher.jsonl \
        --lookup 2 4 6 --threads 2 --rounds 3 --max-new-tokens 64 --out build/lookup_speed

(`make lookup-speed` runs this on the default build.) Where runtime_speed.py times a fixed
128-token text with eos ignored, drafting gains only where an answer repeats text it has seen,
so this benchmark uses what the student will really be asked: the held-out inputs of the
recipe's data (`"split": "eval"` records of data/teacher.jsonl or inputs.jsonl), in the bundle's prompt template,
answered greedily until eos or `--max-new-tokens`. One process, one Generator; each round runs
every setting (0 = plain decoding, then each `--lookup` draft length) over all inputs, the order
of the settings rotating between rounds so a shared machine's load hits them alike.

Reported per setting: decode ms per answer token (the time after the first token, summed over
the inputs, over the tokens after the first; median over rounds), the speed-up over plain
decoding in the same run, model runs per decoded token, drafted and accepted tokens, how many
answers equal the plain ones token for token, and, where the records hold the teacher's answer
("output", as in teacher.jsonl), the answers' mean ROUGE-L against it: a changed answer is
still judged. Writes `lookup_speed.json` and `lookup_speed.md` to `--out`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from edgestill.benchmarks.record import bundle_name, tool_record, write_records
from edgestill.errors import UserError, cli_main
from edgestill.files import atomic_write_json, atomic_write_text, read_user_records
from edgestill.machine import machine_info, one_line
from edgestill.markdown import table_text
from edgestill.metrics import mean_rouge_l
from edgestill.teacher_data import read_split


def read_inputs(path: Path, split: str) -> list[tuple[str, str | None]]:
    """(input, teacher's answer or None) of the records of `path` whose "split" is `split` ("all":
    every record): a data/teacher.jsonl read as every stage reads it (answered records), another
    file (.jsonl, .csv or .txt) as distill reads a user's inputs."""
    if path.name == "teacher.jsonl":
        texts = [(r.input, r.output) for r in _teacher_split(path, split)]
    else:
        texts = [(r["input"], r.get("output") if isinstance(r.get("output"), str) else None)
                 for r in read_user_records(path) if split == "all" or r.get("split") == split]
    if not texts:
        raise UserError(f"--data {path}: no records with \"split\": \"{split}\"; use --split all or another file")
    return texts


def _teacher_split(path: Path, split: str) -> list:
    if not path.is_file():
        raise UserError(f"--data {path}: not found; run `edgestill distill RECIPE` first")
    try:
        return read_split(path, split)
    except ValueError as err:
        raise UserError(f"--split: {err}") from None


def one_pass(gen, prompts: list[list[int]], lookup: int, max_new: int) -> dict:
    """Greedy answers to every prompt with `lookup` draft tokens (0: plain); timings and counts."""
    from edgestill.runtime.lookup import lookup_steps

    decode_s, tokens, answers, stats = 0.0, 0, [], {"runs": 0, "drafted": 0, "accepted": 0}
    for ids in prompts:
        first, answer = None, []
        if lookup:
            cache = gen.model.new_cache(1, len(ids) + max_new)
            steps = lookup_steps(cache, gen._chooser(_greedy(gen), ids), ids, max_new, lookup, gen.eos, stats)
        else:
            steps = gen.stream_ids(ids, max_new)
        for token in steps:
            first = first or time.perf_counter()
            answer.append(token)
        if answer:
            decode_s += time.perf_counter() - first
            tokens += len(answer) - 1
        if not lookup:
            stats["runs"] += max(len(answer) - 1, 0)
        answers.append(answer)
    return {"decode_s": decode_s, "decode_tokens": tokens, "answers": answers, **stats}


def _greedy(gen):
    from edgestill.runtime.sampling import Sampling

    return Sampling().checked(gen.vocab_size)


def measure(bundle: Path, texts: list[tuple[str, str | None]], lookups: list[int], rounds: int, threads: int,
            max_new: int) -> list[dict]:
    """Per round and setting: decode ms per token, runs, drafts, answers equal to plain decoding
    and, where every input has the teacher's answer, their mean ROUGE-L against it."""
    from edgestill.runtime import Bundle, Generator

    gen = Generator(Bundle.open(bundle), threads=threads)
    prompts = [gen.encode(text) for text, _ in texts]
    references = [ref for _, ref in texts]
    prompt_tokens = max(1, round(statistics.mean(len(p) for p in prompts)))  # the records' prompt_tokens: the mean
    settings = [0, *lookups]
    one_pass(gen, prompts[:2], 0, 8)  # warm-up
    plain, out = None, []
    for r in range(rounds):
        for lookup in settings[r % len(settings):] + settings[:r % len(settings)]:
            res = one_pass(gen, prompts, lookup, max_new)
            plain = res["answers"] if lookup == 0 and plain is None else plain
            out.append({"round": r, "lookup": lookup, "prompt_tokens": prompt_tokens,
                        **{k: v for k, v in res.items() if k != "answers"},
                        "ms_per_token": round(1e3 * res["decode_s"] / max(res["decode_tokens"], 1), 3),
                        "answers": res["answers"]})
            print(f"round {r + 1} lookup {lookup}: {out[-1]['ms_per_token']} ms/token", file=sys.stderr)
    for row in out:
        answers = row.pop("answers")
        row["same_as_plain"] = sum(a == b for a, b in zip(answers, plain))
        if all(ref is not None for ref in references):
            decoded = [gen.bundle.tokenizer.decode(a, skip_special_tokens=True) for a in answers]
            row["rouge_l_vs_teacher"] = round(mean_rouge_l(decoded, references), 4)
    return out


def summarize(rounds: list[dict], n_inputs: int) -> list[dict]:
    rows = []
    for lookup in sorted({r["lookup"] for r in rounds}):
        mine = [r for r in rounds if r["lookup"] == lookup]
        rows.append({"lookup": lookup, "ms_per_token": round(statistics.median(r["ms_per_token"] for r in mine), 3),
                     "ms_per_token_rounds": [r["ms_per_token"] for r in mine],
                     "runs_per_token": round(mine[0]["runs"] / max(mine[0]["decode_tokens"], 1), 3),
                     "drafted": mine[0]["drafted"], "accepted": mine[0]["accepted"],
                     "answers_same_as_plain": f"{min(r['same_as_plain'] for r in mine)}/{n_inputs}",
                     "rouge_l_vs_teacher": mine[0].get("rouge_l_vs_teacher")})
    plain = rows[0]["ms_per_token"]
    for row in rows:
        row["speedup"] = round(plain / row["ms_per_token"], 2)
    return rows


COLUMNS = ("prompt_lookup", "decode ms/token (median)", "speed-up", "model runs per token", "drafted", "accepted",
           "answers equal to plain", "ROUGE-L vs teacher")


def table_row(r: dict) -> list:
    return [r["lookup"] or "off", r["ms_per_token"], f"{r['speedup']}x", r["runs_per_token"], r["drafted"],
            r["accepted"], r["answers_same_as_plain"], r["rouge_l_vs_teacher"]]


def markdown(rows: list[dict], meta: dict) -> str:
    return (f"# Prompt-lookup decoding ({meta['bundle']}; {meta['machine']}; {meta['threads']} threads; "
            f"{meta['inputs']} held-out inputs, up to {meta['max_new_tokens']} tokens each, greedy, until eos; "
            f"median of {meta['rounds']} interleaved rounds)\n\n{table_text(COLUMNS, [table_row(r) for r in rows])}\n"
            f"Load average before/after: {meta['load_before']} / {meta['load_after']}.\n")


def record(r: dict, meta: dict, machine: dict) -> dict:
    """One setting's row as a benchmark record (benchmarks/record.schema.json)."""
    engine = "edgestill-runtime" + (f" prompt_lookup={r['lookup']}" if r["lookup"] else "")
    settings = {"engine": engine, "threads": meta["threads"], "prompt_tokens": meta["prompt_tokens"],
                "gen_tokens": meta["max_new_tokens"], "repetitions": meta["rounds"], "rounds": meta["rounds"]}
    same, n = map(int, r["answers_same_as_plain"].split("/"))
    return tool_record("lookup_speed", bundle_name(meta["bundle"]), meta["bundle"], settings, machine,
                       prompt_lookup=r["lookup"], decode_ms_p50=r["ms_per_token"],
                       decode_tok_s_p50=round(1e3 / r["ms_per_token"], 1) if r["ms_per_token"] else None,
                       decode_ms_ratio_vs={"edgestill-runtime": round(1 / r["speedup"], 3) if r["speedup"] else None},
                       quality={"rouge_l_vs_teacher": r["rouge_l_vs_teacher"], "same_as_plain": round(same / n, 4)},
                       figures={k: r[k] for k in ("runs_per_token", "drafted", "accepted", "answers_same_as_plain",
                                                  "ms_per_token_rounds")})


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="edgestill lookup-speed", description=__doc__.split("\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--data", type=Path, required=True,
                        help="jsonl with an \"input\" (and the teacher's \"output\") per line: data/teacher.jsonl")
    parser.add_argument("--split", default="eval", help="records whose \"split\" is this ('all': every record)")
    parser.add_argument("--lookup", type=int, nargs="+", default=[2, 4, 6], help="draft lengths to compare with 0")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("build/lookup_speed"))
    args = parser.parse_args(argv)
    if not (args.bundle / "manifest.json").is_file():
        raise UserError(f"{args.bundle}: not a bundle (no manifest.json); give a folder such as build/default/bundle-int8")
    if args.rounds < 1 or not all(1 <= k <= 32 for k in args.lookup):
        raise UserError("--rounds must be at least 1 and each --lookup from 1 to 32")
    texts = read_inputs(args.data, args.split)
    machine, load_before = machine_info(), os.getloadavg()[0]
    rounds = measure(args.bundle, texts, args.lookup, args.rounds, args.threads, args.max_new_tokens)
    meta = {"bundle": str(args.bundle), "machine": one_line(machine), "threads": args.threads, "inputs": len(texts),
            "prompt_tokens": rounds[0]["prompt_tokens"],
            "max_new_tokens": args.max_new_tokens, "rounds": args.rounds,
            "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2)}
    rows = summarize(rounds, len(texts))
    atomic_write_json(args.out / "lookup_speed.json", {"meta": meta, "rows": rows, "rounds": rounds})
    atomic_write_text(args.out / "lookup_speed.md", markdown(rows, meta))
    write_records(args.out / "records.jsonl", [record(r, meta, machine) for r in rows])
    print(markdown(rows, meta))
    return 0


if __name__ == "__main__":
    cli_main(main)
