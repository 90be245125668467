"""The engines a benchmark times, each behind one call: `stream_ids(ids, max_new_tokens, ignore_eos=True)`.

- `edgestill-runtime`: our runtime (`runtime.Generator`) on a bundle.
- `onnxruntime-genai`: the same bundle through `onnxruntime_genai` (its own KV cache and greedy search).
- `transformers-eager`: a Hugging Face folder (the teacher) in PyTorch, `attn_implementation="eager"`,
  fp32 on the CPU, greedy, with the KV cache.
- `llama.cpp`: a GGUF (an exported `gguf-*/` folder, or the teacher's .gguf file) through llama-cpp-python
  (`Llama.eval` + argmax, no sampling code in the loop); where llama-cpp-python is missing and
  `llama-bench` is on PATH, that program instead (not through `stream_ids`; see `llama_bench_record`).

`open_engine(engine, path, threads)` returns (streamer, tokenizer, facts) for `benchmarks.measure`,
which runs in a fresh process per record so each engine's peak RSS is its own.
Every engine picks tokens greedily (argmax) and never stops at eos, so all decode the same count.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from edgestill.errors import UserError

ENGINES = ("edgestill-runtime", "onnxruntime-genai", "transformers-eager", "llama.cpp")
HF_WEIGHTS = ("*.safetensors",)


class GenaiStreamer:
    """A bundle in onnxruntime-genai, `threads` intra-op threads (set through a config overlay)."""

    def __init__(self, bundle_dir: Path, threads: int):
        import onnxruntime_genai as og

        self.og = og
        config = og.Config(str(bundle_dir))
        options = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
        config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
        self.model = og.Model(config)

    def stream_ids(self, ids: list[int], max_new_tokens: int, ignore_eos: bool = True):
        og = self.og
        total = len(ids) + max_new_tokens
        params = og.GeneratorParams(self.model)
        params.set_search_options(do_sample=False, max_length=total, min_length=total if ignore_eos else 0)
        gen = og.Generator(self.model, params)
        gen.append_tokens([ids])  # the prefill runs here, so it counts in the time to the first id
        while not gen.is_done():
            gen.generate_next_token()
            yield int(gen.get_next_tokens()[0])


class TorchStreamer:
    """A Hugging Face causal LM in PyTorch eager mode, fp32, greedy, with the KV cache."""

    def __init__(self, model_dir: Path, threads: int):
        import torch
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(threads)
        self.torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                          attn_implementation="eager").eval()

    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def stream_ids(self, ids: list[int], max_new_tokens: int, ignore_eos: bool = True):
        torch = self.torch
        with torch.inference_mode():
            out = self.model(input_ids=torch.tensor([ids]), use_cache=True)
            for step in range(max_new_tokens):
                token = int(out.logits[0, -1].argmax())
                yield token
                if step + 1 < max_new_tokens:
                    out = self.model(input_ids=torch.tensor([[token]]), past_key_values=out.past_key_values,
                                     use_cache=True)


class LlamaCppStreamer:
    """A GGUF in llama.cpp through llama-cpp-python: `threads` threads, greedy by argmax over the logits."""

    def __init__(self, gguf: Path, threads: int, n_ctx: int):
        from llama_cpp import Llama

        self.llm = Llama(model_path=str(gguf), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                         n_batch=n_ctx, verbose=False)

    def stream_ids(self, ids: list[int], max_new_tokens: int, ignore_eos: bool = True):
        return llama_greedy_ids(self.llm, ids, max_new_tokens)


def llama_greedy_ids(llm, ids: list[int], max_new_tokens: int, stop: int | None = None):
    """Greedy ids (argmax over the logits) after `ids` in a llama-cpp-python `Llama`, up to
    `max_new_tokens` or before `stop`; the prefill runs at the first `next()`, so it counts in the
    time to the first id."""
    import numpy as np

    llm.reset()
    llm.eval(ids)
    for step in range(max_new_tokens):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        if token == stop:
            return
        yield token
        if step + 1 < max_new_tokens:
            llm.eval([token])


class LlamaCppTokenizer:
    """The GGUF's own tokenizer behind the `encode(text).ids` call the benchmark's prompt uses."""

    def __init__(self, llm):
        self.llm = llm

    def encode(self, text: str, add_special_tokens: bool = False):
        from types import SimpleNamespace

        return SimpleNamespace(ids=self.llm.tokenize(text.encode(), add_bos=add_special_tokens, special=False))


def gguf_file(path: Path) -> Path:
    """The .gguf file of a `gguf-*` folder (its model.gguf), or `path` itself when it is one."""
    if path.is_dir():
        files = sorted(path.glob("*.gguf"))
        if not files:
            raise UserError(f"{path}: no .gguf file; export one with export.precisions=[gguf-q8_0]")
        return files[0]
    return path


def gguf_facts(path: Path, name: str | None, role: str | None) -> dict:
    """Record identity for a GGUF: the folder's manifest when there is one, else the file's own header
    (params, the dominant matrix type as `gguf-q4_1`, bytes)."""
    if path.is_dir():
        return {}  # measure.manifest_facts reads the folder's manifest.json
    from collections import Counter

    import gguf

    reader = gguf.GGUFReader(str(path))
    kinds = Counter(t.tensor_type.name.lower() for t in reader.tensors if len(t.shape) == 2)
    return {"name": name or path.stem, "bundle": str(path), "bundle_sha256": None, "role": role or "teacher",
            "precision": f"gguf-{kinds.most_common(1)[0][0]}" if kinds else None, "quantization": None,
            "params": int(sum(int(t.n_elements) for t in reader.tensors)), "file_bytes": path.stat().st_size}


def hf_facts(model_dir: Path, name: str | None, role: str) -> dict:
    """Record identity for a Hugging Face folder: size of its weight files, fp32 (as loaded)."""
    files = [p for pattern in HF_WEIGHTS for p in model_dir.glob(pattern)]
    if not files:
        raise UserError(f"{model_dir}: no *.safetensors weights; transformers-eager needs a Hugging Face folder")
    return {"name": name or model_dir.name, "bundle": str(model_dir), "bundle_sha256": None, "role": role,
            "precision": "fp32", "quantization": None, "params": None,
            "file_bytes": sum(p.stat().st_size for p in files)}


def open_engine(engine: str, path: Path, threads: int, n_ctx: int = 4096):
    """(streamer, tokenizer) for `engine` on `path` (a bundle, an HF folder for torch, a GGUF for llama.cpp)."""
    from tokenizers import Tokenizer

    if engine == "llama.cpp":
        streamer = LlamaCppStreamer(gguf_file(path), threads, n_ctx)
        return streamer, LlamaCppTokenizer(streamer.llm)
    if engine == "edgestill-runtime":
        from edgestill.runtime import Bundle, Generator

        bundle = Bundle.open(path)
        return Generator(bundle, threads=threads), bundle.tokenizer
    tokenizer_file = path / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise UserError(f"{path}: no tokenizer.json")
    if engine == "onnxruntime-genai":
        return GenaiStreamer(path, threads), Tokenizer.from_file(str(tokenizer_file))
    if engine == "transformers-eager":
        return TorchStreamer(path, threads), Tokenizer.from_file(str(tokenizer_file))
    raise UserError(f"engine '{engine}' is not timed in-process; allowed: edgestill-runtime, onnxruntime-genai, "
                    "transformers-eager, llama.cpp")


# ---------------------------------------------------------------- llama.cpp (a program, when installed)


def llama_bench_path() -> str | None:
    """`llama-bench` on PATH, or None (then llama.cpp rows are skipped and the report says so)."""
    return shutil.which("llama-bench")


def find_gguf(build_dir: Path) -> list[Path]:
    """GGUF files of the student for llama-bench: the exported `build/<name>/gguf-*/model.gguf`, or
    files put in `build/<name>/gguf/` or `student/` by hand."""
    return sorted([*build_dir.glob("gguf-*/*.gguf"), *build_dir.glob("student/*.gguf"), *build_dir.glob("gguf/*.gguf")])


def gguf_type(model_type: str | None) -> str | None:
    """`q8_0` from llama-bench's `model_type` such as "llama 135M Q8_0"."""
    words = (model_type or "").split()
    return words[-1].lower() if words else None


def llama_bench_record(rows: list[dict], gguf: Path) -> dict:
    """Our record fields from llama-bench's `-o json` rows for one (threads, prompt, gen) point.

    llama-bench reports a prompt-processing row (n_gen 0) and a generation row (n_prompt 0), each
    with `avg_ts`/`samples_ts` (tokens/s per repetition); it has no load time, TTFT or memory column.
    """
    pp = next((r for r in rows if r.get("n_gen", 0) == 0 and r.get("n_prompt", 0) > 0), None)
    tg = next((r for r in rows if r.get("n_prompt", 0) == 0 and r.get("n_gen", 0) > 0), None)
    samples = [float(x) for x in (tg or {}).get("samples_ts") or []]
    out = {"name": gguf.stem, "bundle": str(gguf), "bundle_sha256": None, "role": "student",
           "precision": gguf_type(rows[0].get("model_type") if rows else None),
           "quantization": None, "params": (rows[0].get("model_n_params") if rows else None),
           "file_bytes": gguf.stat().st_size, "engine": "llama.cpp",
           "engine_version": (rows[0].get("build_commit") if rows else None), "load_s": None,
           "ttft_ms_p50": round(1000 * pp["n_prompt"] / pp["avg_ts"], 2) if pp and pp.get("avg_ts") else None,
           "ttft_ms_p90": None, "peak_rss_mb": None}
    if samples:
        samples.sort()
        mid = samples[len(samples) // 2] if len(samples) % 2 else (samples[len(samples) // 2 - 1]
                                                                  + samples[len(samples) // 2]) / 2
        out.update(decode_tok_s_p50=round(mid, 1), decode_tok_s_min=round(samples[0], 1),
                   decode_tok_s_max=round(samples[-1], 1), decode_ms_p50=round(1000 / mid, 3), decode_ms_p90=None)
    out["timing_scope"] = ("llama-bench: prompt processing of n_prompt tokens and generation of n_gen tokens "
                           "measured separately; TTFT here = n_prompt / prompt tokens/s; no load time or memory")
    return out


def run_llama_bench(exe: str, gguf: Path, threads: int, prompt_tokens: int, gen_tokens: int,
                    repetitions: int, timeout: float = 1800) -> dict:
    """Run llama-bench for one grid point; our record fields (see `llama_bench_record`)."""
    cmd = [exe, "-m", str(gguf), "-t", str(threads), "-p", str(prompt_tokens), "-n", str(gen_tokens),
           "-r", str(repetitions), "-o", "json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"llama-bench failed on {gguf} (exit {proc.returncode}): "
                           f"{(proc.stderr.strip().splitlines() or ['no output'])[-1]}")
    return llama_bench_record(json.loads(proc.stdout), gguf)
