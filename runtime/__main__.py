"""Command line for the runtime: generate from one prompt, or chat line by line.

    python -m runtime generate build/default/bundle-int8 --prompt "Paragraph to summarise ..."
    python -m runtime chat build/default/bundle-int8        # one answer per stdin line

Each prompt is wrapped in the bundle's chat template and instruction (from manifest.json)
unless `--raw`. Answers stream to stdout; errors are one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import sys

from edgestill.errors import UserError, cli_main
from runtime.bundle import Bundle
from runtime.generator import Generator


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 with usage; we want one line
        raise UserError(f"{message} (see `python -m runtime {{generate,chat}} --help`)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m runtime", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("generate", "chat"):
        p = sub.add_parser(name)
        p.add_argument("bundle", help="bundle folder, e.g. build/default/bundle-int8")
        if name == "generate":
            p.add_argument("--prompt", required=True)
        p.add_argument("--max-new-tokens", type=int, default=64)
        p.add_argument("--temperature", type=float, default=0.0)
        p.add_argument("--top-k", type=int, default=0)
        p.add_argument("--top-p", type=float, default=1.0)
        p.add_argument("--seed", type=int, default=None)
        p.add_argument("--threads", type=int, default=None)
        p.add_argument("--raw", action="store_true", help="no chat template, no instruction")
        p.add_argument("--no-verify", action="store_true", help="skip the sha256 check of the files")
    return parser


def _answer(gen: Generator, text: str, args: argparse.Namespace) -> None:
    for piece in gen.stream(text, max_new_tokens=args.max_new_tokens, raw=args.raw,
                            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                            seed=args.seed):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    gen = Generator(Bundle.open(args.bundle, verify=not args.no_verify), threads=args.threads)
    if args.command == "generate":
        _answer(gen, args.prompt, args)
        return 0
    for line in sys.stdin:
        if line.strip():
            _answer(gen, line.rstrip("\n"), args)
    return 0


if __name__ == "__main__":
    cli_main(main)
