"""Text generation from a bundle with onnxruntime: the KV-cache decode loop, sampling, streaming.

    from runtime import Bundle, Generator
    gen = Generator(Bundle.open("build/default/bundle-int8"), threads=2)
    for piece in gen.stream("The council voted ...", max_new_tokens=48):
        print(piece, end="", flush=True)

The graph is onnxruntime-genai's builder layout (docs/contracts.md): `input_ids`,
`attention_mask`, `past_key_values.{i}.key|value` [batch, kv_heads, past, head_dim]
(+ `position_ids` when the graph has it) in; `logits`, `present.{i}.key|value` out. Prefill
feeds the whole prompt with an empty (length 0) past; each decode step feeds one token and the
previous step's presents, kept as OrtValues so the cache is not copied through numpy.
Batch size is 1.
"""

from __future__ import annotations

import os
from typing import Iterator, Sequence

import numpy as np
import onnxruntime as ort

from runtime.bundle import Bundle, BundleError
from runtime.detok import StopFilter, TextStream
from runtime.sampling import pick

_NP_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


class Generator:
    """One onnxruntime session over a bundle's model, generating for one sequence at a time."""

    def __init__(self, bundle: Bundle, threads: int | None = None):
        self.bundle = bundle
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or 0  # 0 = onnxruntime's default (all cores)
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        model = bundle.model_path
        if not model.is_file():
            raise BundleError(f"bundle {bundle.path}: model file {model.name} is missing; re-export it")
        self.session = ort.InferenceSession(os.fspath(model), opts, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        m = bundle.manifest["model"]
        self.num_layers, self.kv_heads, self.head_dim = m["num_layers"], m["num_kv_heads"], m["head_dim"]
        past = next(i for i in self.session.get_inputs() if i.name.startswith("past_key_values."))
        self.kv_dtype = _NP_DTYPES[past.type]

    # ------------------------------------------------------------------ token level

    def empty_past(self) -> dict[str, ort.OrtValue]:
        """Length-0 KV cache for prefill: {past_key_values.i.key|value: [1, kv_heads, 0, head_dim]}."""
        zero = np.zeros((1, self.kv_heads, 0, self.head_dim), dtype=self.kv_dtype)
        return {f"past_key_values.{i}.{kind}": ort.OrtValue.ortvalue_from_numpy(zero)
                for i in range(self.num_layers) for kind in ("key", "value")}

    def forward(self, ids: Sequence[int], past: dict[str, ort.OrtValue], past_len: int
                ) -> tuple[np.ndarray, dict[str, ort.OrtValue]]:
        """Run `ids` after a cache of `past_len` tokens.

        Returns:
            logits [len(ids), vocab] (float32 numpy) and the new cache (past_len + len(ids) long).
        """
        n = len(ids)
        feeds = dict(past)
        feeds["input_ids"] = ort.OrtValue.ortvalue_from_numpy(np.asarray([ids], dtype=np.int64))
        feeds["attention_mask"] = ort.OrtValue.ortvalue_from_numpy(np.ones((1, past_len + n), dtype=np.int64))
        if "position_ids" in self.input_names:
            pos = np.arange(past_len, past_len + n, dtype=np.int64)[None]
            feeds["position_ids"] = ort.OrtValue.ortvalue_from_numpy(pos)
        outs = dict(zip(self.output_names, self.session.run_with_ort_values(self.output_names, feeds)))
        logits = outs.pop("logits").numpy()[0]
        present = {name.replace("present.", "past_key_values.", 1): v for name, v in outs.items()
                   if name.startswith("present.")}
        return logits.astype(np.float32, copy=False), present

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Logits [len(ids), vocab] for a whole sequence in one pass (used by export validation)."""
        return self.forward(ids, self.empty_past(), 0)[0]

    def stream_ids(self, prompt_ids: Sequence[int], max_new_tokens: int, temperature: float = 0.0,
                   top_k: int = 0, top_p: float = 1.0, seed: int | None = None,
                   ignore_eos: bool = False) -> Iterator[int]:
        """Yield up to `max_new_tokens` new token ids; the first right after prefill.

        Stops before yielding an eos id unless `ignore_eos` (then exactly `max_new_tokens`).
        """
        if not prompt_ids:
            raise ValueError("prompt_ids is empty; give at least one token")
        rng = np.random.default_rng(seed)
        eos = set() if ignore_eos else set(self.bundle.eos_token_ids)
        logits, past = self.forward(list(prompt_ids), self.empty_past(), 0)
        length = len(prompt_ids)
        for step in range(max_new_tokens):
            token = pick(logits[-1], temperature, top_k, top_p, rng)
            if token in eos:
                return
            yield token
            if step + 1 == max_new_tokens:
                return
            logits, past = self.forward([token], past, length)
            length += 1

    # ------------------------------------------------------------------ text level

    def stream(self, text: str, max_new_tokens: int = 64, stop: Sequence[str] = (), raw: bool = False,
               **sampling) -> Iterator[str]:
        """Yield text pieces of the answer to `text` (prompted with the bundle's template unless `raw`).

        `sampling`: temperature, top_k, top_p, seed, ignore_eos (see `stream_ids`). Generation ends
        at eos, after `max_new_tokens`, or at the first `stop` string (which is not yielded).
        """
        ids = self.bundle.encode(text, raw=raw)
        detok, stops = TextStream(self.bundle.tokenizer), StopFilter(tuple(stop))
        for token in self.stream_ids(ids, max_new_tokens, **sampling):
            piece = stops.push(detok.push(token))
            if piece:
                yield piece
            if stops.stopped:
                return
        tail = stops.push(detok.flush())
        tail += "" if stops.stopped else stops.flush()
        if tail:
            yield tail

    def generate(self, text: str, max_new_tokens: int = 64, stop: Sequence[str] = (), raw: bool = False,
                 **sampling) -> str:
        """The whole answer to `text` as one string (see `stream`)."""
        return "".join(self.stream(text, max_new_tokens, stop, raw, **sampling))
