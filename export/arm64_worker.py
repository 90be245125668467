"""The emulated side of `export.arm64`: run one bundle on the given token ids, write what it computed.

    qemu-aarch64-static -cpu cortex-a76 -L SYSROOT/cpu-cortex-a76 SYSROOT/root/usr/bin/python3.11 \
        -P export/arm64_worker.py SPEC.json OUT_DIR

Run as a script with `-P` (not `-m export...`), so it imports only the runtime and its dependencies (numpy,
onnxruntime, tokenizers), which is all the emulated Python has. SPEC.json:
`{"bundle": path, "threads": n, "sequences": [[ids], ...], "greedy": [[prompt ids], ...],
"greedy_tokens": n}`. OUT_DIR gets `logits_<i>.npy` (float32 [len(ids), vocab], the bundle's
teacher-forced logits of sequence i) and `result.json` (the greedy continuations, the machine,
onnxruntime's version, the seconds spent).
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime

from edgestill.runtime import Bundle, Generator


def run(spec: dict, out: Path) -> dict:
    """Compute every sequence's logits and every greedy continuation of `spec`; files into `out`."""
    start = time.perf_counter()
    gen = Generator(Bundle.open(spec["bundle"]), threads=spec.get("threads", 2))
    load_s = time.perf_counter() - start
    for i, ids in enumerate(spec["sequences"]):
        np.save(out / f"logits_{i}.npy", gen.logits(ids))
    greedy = [list(gen.stream_ids(ids, spec["greedy_tokens"], ignore_eos=True)) for ids in spec["greedy"]]
    return {"machine": platform.machine(), "onnxruntime": onnxruntime.__version__, "greedy": greedy,
            "load_s": round(load_s, 2), "seconds": round(time.perf_counter() - start, 1)}


def main(argv: list[str]) -> int:
    spec_file, out = Path(argv[0]), Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    result = run(json.loads(spec_file.read_text()), out)
    (out / "result.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
