"""The onnxruntime side of the runtime: one session per bundle, and a preallocated, bound KV cache.

    model = Model(bundle, threads=2)                 # session options chosen for CPUs
    cache = model.new_cache(batch=1, capacity=len(prompt) + 64)
    logits = cache.prefill(0, prompt)                # [vocab] after the prompt's last token
    logits = cache.step(np.array([token]))           # [batch, vocab] after one more token per row
    logits = cache.extend([token, d1, d2])           # [3, vocab]: several tokens in one run (one row)
    cache.rewind(1)                                  # forget the last of them (a rejected draft)

The bundle graph is onnxruntime-genai's builder layout (docs/contracts.md). When its
genai_config.json says `past_present_share_buffer` (GroupQueryAttention writes the new key/value
into the past buffer in place), every `past_key_values.*` input and its `present.*` output are
bound, once, to the same preallocated numpy buffer [batch, kv_heads, capacity, head_dim]: a
decode step copies nothing but one token id in and one row of logits out, and allocates nothing
(the attention mask spans the whole buffer and is bound once, a step sets one entry; logits
land in a bound buffer). Rows of a batch
are prefilled one by one (each a view of its row of the buffers) and then decoded together with
a right-padded mask, so prompts of different lengths batch without padding tokens.
Graphs without a shared buffer fall back to feeding the previous step's presents as OrtValues.
A cache belongs to one generation; the session is shared and thread safe.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np
import onnxruntime as ort

from edgestill.runtime.bundle import Bundle
from edgestill.runtime.errors import InputError, MissingFileError, ModelLoadError

PREFILL_CHUNK = 128  # tokens per prefill run; see KVCache.prefill
_NP_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def session_options(threads: int | None) -> ort.SessionOptions:
    """CPU settings: `threads` intra-op threads (None = all cores), one inter-op thread, all
    graph optimisations, warnings only. The CPU memory arena stays on: without it decode was ~10%
    slower on the int8 student at a 1024-token context (26.1 vs 28.9 ms/token, 1 thread,
    interleaved), for ~23 MB less peak RSS; chunked prefill bounds what the arena keeps."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or 0)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.enable_cpu_mem_arena = True
    opts.enable_mem_pattern = True
    opts.log_severity_level = 3
    return opts


def _shares_buffer(bundle: Bundle) -> bool:
    try:
        config = json.loads((bundle.path / "genai_config.json").read_text(encoding="utf-8"))
        return bool(config["search"]["past_present_share_buffer"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


class Model:
    """An onnxruntime session over a bundle's model.onnx plus what the decode loop needs to know."""

    def __init__(self, bundle: Bundle, threads: int | None = None, providers: Sequence[str] | None = None):
        path = bundle.model_path
        if not path.is_file():
            raise MissingFileError(f"bundle {bundle.path}: model file {path.name} is missing; re-export the bundle")
        providers = list(providers or ["CPUExecutionProvider"])
        missing = [p for p in providers if p not in ort.get_available_providers()]
        if missing:
            raise InputError(f"providers {missing} are not in this onnxruntime build; available: "
                             f"{ort.get_available_providers()}")
        try:
            self.session = ort.InferenceSession(os.fspath(path), session_options(threads), providers=providers)
        except Exception as err:  # onnxruntime raises Fail/InvalidProtobuf/RuntimeError for bad files
            raise ModelLoadError(f"bundle {bundle.path}: onnxruntime cannot load {path.name} "
                                 f"({str(err).splitlines()[0][:160]}); the file is damaged or truncated, "
                                 f"re-export the bundle") from None
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.kv_names = [n for n in inputs if n.startswith("past_key_values.")]
        self.has_position_ids = "position_ids" in inputs
        first = inputs[self.kv_names[0]]
        self.kv_dtype = _NP_DTYPES[first.type]
        meta = bundle.manifest["model"]  # the graph's head_dim is symbolic ("kv_cache_dim")
        self.kv_heads, self.head_dim = int(meta["num_kv_heads"]), int(meta["head_dim"])
        logits = next(o for o in self.session.get_outputs() if o.name == "logits")
        self.vocab_size, self.logits_dtype = int(logits.shape[-1]), _NP_DTYPES[logits.type]
        self.share_buffer = _shares_buffer(bundle) and not self.has_position_ids

    def new_cache(self, batch: int, capacity: int) -> "KVCache | ReFeedCache":
        """An empty cache for `batch` rows of up to `capacity` tokens each."""
        cls = KVCache if self.share_buffer else ReFeedCache
        return cls(self, batch, capacity)

    def kv_bytes(self, batch: int, capacity: int) -> int:
        """Bytes of the KV cache for `batch` rows of `capacity` tokens."""
        return len(self.kv_names) * batch * self.kv_heads * capacity * self.head_dim * np.dtype(self.kv_dtype).itemsize


class KVCache:
    """Preallocated key/value buffers bound in place as past and present (shared-buffer graphs)."""

    def __init__(self, model: Model, batch: int, capacity: int):
        self.model, self.batch, self.capacity = model, batch, capacity
        shape = (batch, model.kv_heads, capacity, model.head_dim)
        self.buffers = {name: np.zeros(shape, model.kv_dtype) for name in model.kv_names}  # lazily paged in
        self.lengths = np.zeros(batch, dtype=np.int64)  # tokens cached per row
        self.ones = np.ones(capacity, dtype=np.int64)  # prefill masks: views, never copied
        # The decode mask spans the whole buffer, bound once: row b is 1 for its lengths[b] cached
        # tokens, 0 after (the graph reads each row's length from it). Prefill and each step set
        # their 1s in place; rebinding a mask of the current length every step cost ~0.12 ms/token.
        self.mask = np.zeros((batch, capacity), dtype=np.int64)
        self.rows = np.arange(batch)
        self.ids = np.zeros((batch, 1), dtype=np.int64)
        self.logits = np.zeros((batch, 1, model.vocab_size), dtype=model.logits_dtype)
        self.binding = self._bind_rows(slice(None), self.ids, self.logits)
        self._bind_mask(self.binding, self.mask)
        self._extend: dict[int, tuple] = {}  # extend's buffers and binding, per number of tokens

    def _bind_rows(self, rows: slice, ids: np.ndarray, logits: np.ndarray) -> ort.IOBinding:
        binding = self.model.session.io_binding()
        binding.bind_output("logits", "cpu", 0, logits.dtype, list(logits.shape), logits.ctypes.data)
        for name, buf in self.buffers.items():
            view = buf[rows]  # a row slice of a C-contiguous array is contiguous
            value = ort.OrtValue.ortvalue_from_numpy(view)
            binding.bind_ortvalue_input(name, value)
            binding.bind_ortvalue_output(name.replace("past_key_values.", "present.", 1), value)
        binding.bind_input("input_ids", "cpu", 0, np.int64, list(ids.shape), ids.ctypes.data)
        return binding

    def _bind_mask(self, binding: ort.IOBinding, mask: np.ndarray) -> None:
        binding.bind_input("attention_mask", "cpu", 0, np.int64, list(mask.shape), mask.ctypes.data)

    def prefill_all(self, ids: Sequence[int], row: int = 0) -> np.ndarray:
        """Run the prompt `ids` on the empty `row`; returns the logits of every position [n, vocab]."""
        ids = np.asarray([ids], dtype=np.int64)
        n = ids.shape[1]
        logits = np.empty((1, n, self.model.vocab_size), dtype=self.model.logits_dtype)
        binding = self._bind_rows(slice(row, row + 1), ids, logits)
        self._bind_mask(binding, self.ones[:n].reshape(1, n))
        self.model.session.run_with_iobinding(binding)
        self.lengths[row] = n
        self.mask[row, :n] = 1
        return logits[0]

    def prefill(self, row: int, ids: Sequence[int]) -> np.ndarray:
        """Run the prompt `ids` on the empty `row` in chunks of PREFILL_CHUNK tokens (the graph
        computes logits for every position: chunks bound that buffer and the activations);
        returns the last position's logits [vocab]."""
        ids = np.asarray([ids], dtype=np.int64)
        n = ids.shape[1]
        logits = np.empty((1, min(n, PREFILL_CHUNK), self.model.vocab_size), dtype=self.model.logits_dtype)
        for start in range(0, n, PREFILL_CHUNK):
            chunk = ids[:, start:start + PREFILL_CHUNK]
            out = logits[:, :chunk.shape[1]]
            binding = self._bind_rows(slice(row, row + 1), chunk, out)
            self._bind_mask(binding, self.ones[:start + chunk.shape[1]].reshape(1, -1))
            self.model.session.run_with_iobinding(binding)
        self.lengths[row] = n
        self.mask[row, :n] = 1
        return out[0, -1].copy()

    def extend(self, ids: Sequence[int]) -> np.ndarray:
        """Feed several tokens after the cached ones of a one-row cache, in one run (prompt-lookup
        drafts, runtime/lookup.py); returns their logits [len(ids), vocab] (a view, overwritten by
        the next extend of that length). Bindings are made once per length."""
        n, length = len(ids), int(self.lengths[0])
        if self.batch != 1 or length + n > self.capacity:
            raise IndexError(f"extend needs a one-row cache with room for {n} more tokens "
                             f"({length} of {self.capacity} used, {self.batch} rows)")
        if n not in self._extend:
            tokens = np.zeros((1, n), dtype=np.int64)
            logits = np.zeros((1, n, self.model.vocab_size), dtype=self.model.logits_dtype)
            self._extend[n] = (tokens, logits, self._bind_rows(slice(0, 1), tokens, logits))
        tokens, logits, binding = self._extend[n]
        tokens[0] = ids
        self._bind_mask(binding, self.ones[:length + n].reshape(1, -1))
        self.model.session.run_with_iobinding(binding)
        self.mask[0, length:length + n] = 1
        self.lengths[0] = length + n
        return logits[0]

    def rewind(self, n: int) -> None:
        """Forget the last `n` cached tokens of a one-row cache (rejected drafts): the next run
        writes over their buffer entries."""
        length = int(self.lengths[0]) - n
        self.mask[0, length:length + n] = 0
        self.lengths[0] = length

    def step(self, tokens: np.ndarray) -> np.ndarray:
        """Feed one token per row after its cached tokens; returns logits [batch, vocab] (a view,
        overwritten by the next step)."""
        if int(self.lengths.max()) >= self.capacity:
            raise IndexError(f"KV cache full ({self.capacity} tokens)")
        self.ids[:, 0] = tokens
        self.mask[self.rows, self.lengths] = 1
        self.lengths += 1
        self.model.session.run_with_iobinding(self.binding)
        return self.logits[:, 0]


class ReFeedCache:
    """Fallback for graphs whose present is a new, longer tensor: batch 1 per row, presents re-fed
    as OrtValues (no copy through numpy, but onnxruntime allocates a new cache each step)."""

    def __init__(self, model: Model, batch: int, capacity: int):
        self.model, self.batch, self.capacity = model, batch, capacity
        self.past: list[dict] = [self._empty() for _ in range(batch)]
        self.lengths = np.zeros(batch, dtype=np.int64)
        self.out_names = [o.name for o in model.session.get_outputs()]

    def _empty(self) -> dict:
        zero = np.zeros((1, self.model.kv_heads, 0, self.model.head_dim), self.model.kv_dtype)
        return {name: ort.OrtValue.ortvalue_from_numpy(zero) for name in self.model.kv_names}

    def _run(self, row: int, ids: Sequence[int]) -> np.ndarray:
        n, past_len = len(ids), int(self.lengths[row])
        feeds = dict(self.past[row])
        feeds["input_ids"] = ort.OrtValue.ortvalue_from_numpy(np.asarray([ids], dtype=np.int64))
        feeds["attention_mask"] = ort.OrtValue.ortvalue_from_numpy(np.ones((1, past_len + n), dtype=np.int64))
        if self.model.has_position_ids:
            pos = np.arange(past_len, past_len + n, dtype=np.int64)[None]
            feeds["position_ids"] = ort.OrtValue.ortvalue_from_numpy(pos)
        outs = dict(zip(self.out_names, self.model.session.run_with_ort_values(self.out_names, feeds)))
        self.past[row] = {n.replace("present.", "past_key_values.", 1): v for n, v in outs.items()
                          if n.startswith("present.")}
        self.lengths[row] += n
        return outs["logits"].numpy()[0].astype(np.float32, copy=False)

    def prefill_all(self, ids: Sequence[int], row: int = 0) -> np.ndarray:
        return self._run(row, list(ids))

    def prefill(self, row: int, ids: Sequence[int]) -> np.ndarray:
        return self._run(row, list(ids))[-1]

    def step(self, tokens: np.ndarray) -> np.ndarray:
        return np.stack([self._run(row, [int(t)])[0] for row, t in enumerate(tokens)])
