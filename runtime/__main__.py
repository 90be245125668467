"""Command line for the runtime: answer one prompt, or chat interactively with streaming output.

    edgestill generate build/default/bundle-int8 --prompt "Paragraph to summarise ..."
    edgestill generate build/default/bundle-int8 --prompt "..." --json   # one JSON object
    edgestill generate build/reviews/bundle-int8 --prompt "..." --labels  # one of the bundle's labels
    edgestill generate BUNDLE --prompt "..." --choice yes --choice no     # one of these strings
    edgestill generate build/events/bundle-int8 --prompt "..." --fields   # the bundle's JSON fields
    edgestill generate BUNDLE --prompt "..." --fields day,time,place      # a JSON object of these fields
    edgestill chat build/default/bundle-int8        # multi-turn, the bundle's chat template

`generate` wraps the prompt in the bundle's template and instruction (manifest.json) unless
`--raw`. `chat` keeps the conversation and renders it with the bundle's chat template; an empty
line or /reset starts over, /quit or end of input leaves. `--json` prints one JSON object per
answer ({"text", "tokens", "prompt_tokens", "seconds", "tokens_per_second"})
instead of streaming text. `--labels` / `--choice` print the most likely choice (with --json:
{"text", "scores"}: each choice's log-likelihood). `--fields` prints one JSON object with exactly
those fields (with --json: {"text", "fields"}); `--verbatim` / `--no-verbatim` say whether each value
must be a span of the prompt (default: the bundle's task.verbatim). Errors are one line on stderr
with exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from edgestill.errors import UserError, cli_main
from edgestill.runtime.bundle import Bundle
from edgestill.runtime.generator import Generator, clean_text


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 with usage; we want one line
        raise UserError(f"{message} (see `edgestill {{generate,chat}} --help`)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edgestill", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("generate", "chat"):
        p = sub.add_parser(name)
        p.add_argument("bundle", help="bundle folder, e.g. build/default/bundle-int8")
        if name == "generate":
            p.add_argument("--prompt", required=True)
            p.add_argument("--raw", action="store_true", help="no chat template, no instruction")
            p.add_argument("--choice", action="append", default=[], metavar="TEXT",
                           help="answer with the most likely of these strings (repeat it for each)")
            p.add_argument("--labels", action="store_true", help="answer with the most likely of the bundle's labels")
            p.add_argument("--fields", nargs="?", const="", default=None, metavar="A,B,C",
                           help="answer with one JSON object of these fields (alone: the bundle's fields)")
            p.add_argument("--verbatim", action=argparse.BooleanOptionalAction, default=None,
                           help="with --fields: each value a span of the prompt (default: the bundle's task.verbatim)")
        p.add_argument("--max-new-tokens", type=int, default=None,
                       help="default 64 (generate), 128 (--fields), 256 (chat)")
        p.add_argument("--temperature", type=float, default=0.0)
        p.add_argument("--top-k", type=int, default=0)
        p.add_argument("--top-p", type=float, default=1.0)
        p.add_argument("--repetition-penalty", type=float, default=1.0)
        p.add_argument("--seed", type=int, default=None)
        p.add_argument("--prompt-lookup", type=int, default=0, metavar="N",
                       help="greedy only: draft up to N tokens a run from text already seen (2-4 suit summaries)")
        p.add_argument("--copy-bias", type=float, default=None, metavar="B",
                       help="add B to the logits of the input's tokens (default: the bundle's task.copy_bias, else 0)")
        p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
        p.add_argument("--truncate", choices=["left"], default=None, help="drop the oldest prompt tokens if too long")
        p.add_argument("--threads", type=int, default=None)
        p.add_argument("--no-verify", action="store_true", help="skip the sha256 check of the files")
        p.add_argument("--json", action="store_true", help="one JSON object per answer, no streaming")
    return parser


def _settings(args: argparse.Namespace) -> dict:
    return dict(max_new_tokens=args.max_new_tokens, stop=args.stop, truncate=args.truncate,
                temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                repetition_penalty=args.repetition_penalty, seed=args.seed, prompt_lookup=args.prompt_lookup,
                copy_bias=args.copy_bias)


def _answer(gen: Generator, prompt_text: str, args: argparse.Namespace, source: str | None = None) -> str:
    """Stream (or, with --json, collect and print as JSON) the answer to an already formatted prompt;
    the copy bias favours the tokens of `source` (default: the whole prompt)."""
    settings, start, pieces, tokens = gen.with_copy_bias(_settings(args)), time.perf_counter(), [], []
    settings["copy_ids"] = None if source is None else gen.copy_ids(source)
    stop = settings.pop("stop")
    prompt_ids = gen.encode(prompt_text, raw=True)

    def counted(ids):
        for token in ids:
            tokens.append(token)
            yield token
    for piece in gen.pieces(counted(gen.stream_ids(prompt_ids, **settings)), stop):
        pieces.append(piece)
        if not args.json:
            sys.stdout.write(piece)
            sys.stdout.flush()
    text, seconds = "".join(pieces), time.perf_counter() - start
    if args.json:
        record = {"text": text, "tokens": len(tokens), "prompt_tokens": len(prompt_ids), "seconds": round(seconds, 4),
                  "tokens_per_second": round(len(tokens) / seconds, 2) if seconds else None}
        sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write("\n")
    sys.stdout.flush()
    return text


def _choose(gen: Generator, args: argparse.Namespace) -> None:
    """Print the most likely choice (--choice strings, or the bundle's labels with --labels)."""
    if args.choice and args.labels:
        raise UserError("give --choice strings or --labels, not both")
    found = gen.choose(args.prompt, args.choice or None, raw=args.raw, truncate=args.truncate)
    line = json.dumps({"text": found.text, "scores": found.scores}, ensure_ascii=False) if args.json else found.text
    sys.stdout.write(line + "\n")


def _extract(gen: Generator, args: argparse.Namespace) -> None:
    """Print the JSON object of --fields (comma-separated names, or the bundle's fields)."""
    if args.choice or args.labels:
        raise UserError("give --fields or --choice/--labels, not both")
    fields = [f.strip() for f in args.fields.split(",")] if args.fields else None
    found = gen.extract(args.prompt, fields, verbatim=args.verbatim, max_new_tokens=args.max_new_tokens, raw=args.raw,
                        truncate=args.truncate)
    text = json.dumps(found, ensure_ascii=False)
    sys.stdout.write((json.dumps({"text": text, "fields": found}, ensure_ascii=False) if args.json else text) + "\n")


def _chat(gen: Generator, args: argparse.Namespace) -> None:
    messages: list[dict] = []
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            sys.stdout.write("> ")
            sys.stdout.flush()
        line = sys.stdin.readline()
        if not line or line.strip() == "/quit":
            return
        text = line.rstrip("\n")
        if not text.strip() or text.strip() == "/reset":
            messages = []
            continue
        messages.append({"role": "user", "content": text})
        reply = _answer(gen, gen.chat_prompt(messages), args)
        messages.append({"role": "assistant", "content": reply})


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.max_new_tokens is None:
        fields = args.command == "generate" and args.fields is not None
        args.max_new_tokens = 128 if fields else 64 if args.command == "generate" else 256
    if args.command == "generate" and args.fields is None and args.verbatim is not None:
        raise UserError("--verbatim/--no-verbatim go with --fields (a JSON answer whose values are spans of the prompt)")
    gen = Generator(Bundle.open(args.bundle, verify=not args.no_verify), threads=args.threads)
    if args.command == "generate" and args.fields is not None:
        _extract(gen, args)
    elif args.command == "generate" and (args.choice or args.labels):
        _choose(gen, args)
    elif args.command == "generate":
        text = clean_text(args.prompt)
        _answer(gen, gen.bundle.format_prompt(text, raw=args.raw), args, None if args.raw else text)
    else:
        _chat(gen, args)
    return 0


if __name__ == "__main__":
    cli_main(main)
