"""The `edgestill` command: one entry point that hands each subcommand to its stage's own `main`.

    edgestill distill recipes/default.yaml          # recipe -> data -> student
    edgestill export recipes/default.yaml           # student -> validated ONNX bundles
    edgestill bench recipes/default.yaml            # bundles -> report (size, memory, speed, quality)
    edgestill generate build/default/bundle-int8 --prompt "..."
    edgestill SUBCOMMAND --help                     # that stage's complete options

Each subcommand is also `python -m edgestill.<stage>[.<module>]`. A stage is imported only when
its subcommand runs, so `edgestill generate` never imports torch. Stdlib only.
"""

from __future__ import annotations

import importlib
import sys

from edgestill import __version__
from edgestill.errors import cli_main

# subcommand -> (module, main function, argv prefix, one line of help)
COMMANDS: dict[str, tuple[str, str, tuple[str, ...], str]] = {
    "distill": ("edgestill.distill.__main__", "main", (), "recipe -> teacher data -> trained student (build/<name>/student/)"),
    "export": ("edgestill.export.__main__", "main", (), "student -> validated ONNX bundles, one per precision preset"),
    "bench": ("edgestill.benchmarks.__main__", "main", (), "bundles -> report (size, memory, latency, quality); `bench compare A B`"),
    "generate": ("edgestill.runtime.__main__", "main", ("generate",), "answer one prompt with a bundle (numpy + onnxruntime)"),
    "chat": ("edgestill.runtime.__main__", "main", ("chat",), "chat with a bundle in the terminal"),
    "sweep": ("edgestill.distill.sweep", "main", (), "several student sizes on the same data -> score vs latency/size chart"),
    "compare": ("edgestill.distill.compare", "main", (), "two distill_report.json files: paired gains with 95% intervals"),
    "csv": ("edgestill.benchmarks.csv_printer", "main", (), "benchmark records (records.jsonl) as CSV"),
    "gptq": ("edgestill.export.passes", "gptq_main", (), "GPTQ-round a student checkpoint onto the bundle's int grid"),
    "qat": ("edgestill.export.passes", "qat_main", (), "quantization-aware pass on a student checkpoint"),
    "arm64": ("edgestill.export.arm64", "main", (), "a recipe's bundles on emulated ARM64 cores (qemu-user)"),
    "runtime-speed": ("edgestill.benchmarks.runtime_speed", "main", (), "our runtime against onnxruntime-genai, decode speed"),
    "lookup-speed": ("edgestill.benchmarks.lookup_speed", "main", (), "prompt-lookup decoding against plain greedy"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: edgestill {{{','.join(COMMANDS)}}} ...", "",
             "Distil a teacher LLM into a small task student and ship it as an ONNX bundle.", "", "subcommands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, _, _, help_) in COMMANDS.items()]
    lines += ["", "`edgestill SUBCOMMAND --help` lists a subcommand's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(usage())
        sys.exit(0)
    if argv and argv[0] == "--version":
        print(f"edgestill {__version__}")
        sys.exit(0)
    if not argv or argv[0] not in COMMANDS:
        problem = "a subcommand is required" if not argv else f"unknown subcommand {argv[0]!r}"
        print(f"{usage()}\n\nedgestill: error: {problem}", file=sys.stderr)
        sys.exit(2)
    module, function, prefix, _ = COMMANDS[argv[0]]
    cli_main(stage_main(argv[0], module, function), [*prefix, *argv[1:]])


def stage_main(command: str, module: str, function: str):
    """The subcommand's `main`; a stage whose extra is not installed is one line and exit 2."""
    try:
        return getattr(importlib.import_module(module), function)
    except ModuleNotFoundError as err:
        if (err.name or "edgestill").split(".")[0] == "edgestill":
            raise
        print(f"error: `edgestill {command}` needs {err.name}, which is not installed; install the stages with "
              "pip install 'edgestill[all]' (the plain install holds the runtime only)", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
