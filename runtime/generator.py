"""Text generation from a bundle: checked inputs, the decode loop, streaming, chat and batches.

    from edgestill.runtime import Bundle, Generator
    gen = Generator(Bundle.open("build/default/bundle-int8"), threads=2)
    for piece in gen.stream("The council voted ...", max_new_tokens=48):
        print(piece, end="", flush=True)
    gen.chat([{"role": "user", "content": "Hi!"}])            # the bundle's own chat template
    gen.generate_batch(["first text", "second text"])         # several prompts decoded together
    gen.generate("The council voted ...", prompt_lookup=3)    # greedy, drafts from the text (lookup.py)
    gen.extract("Dinner at Rosa's, Friday 7 pm", ["day", "time", "place"])  # always that JSON object (fields.py)

Every argument is checked before any work and a bad one raises a `runtime.errors.InputError`
subclass (`PromptError`, `EncodingError`, `ContextLengthError`, `SamplingError`) that says what
to change. Context policy: prompt + `max_new_tokens` must fit `bundle.context_length`; otherwise
`ContextLengthError`, unless `truncate="left"`, which drops the oldest prompt tokens. A
Generator holds no per-generation state (each call makes its own KV cache, runtime/engine.py),
so several threads may share one.
"""

from __future__ import annotations

import json
import threading
from typing import Callable, Iterator, Sequence

import numpy as np

from edgestill.runtime.bundle import Bundle
from edgestill.runtime.choices import Choice, check_choices, score
from edgestill.runtime.detok import Answer
from edgestill.runtime.engine import Model
from edgestill.runtime.errors import (
    ContextLengthError,
    EncodingError,
    PromptError,
    SamplingError,
)
from edgestill.runtime.fields import (
    FieldsFormat,
    FieldsGuide,
    TokenTable,
    check_fields,
    decode,
    token_pieces,
)
from edgestill.runtime.lookup import MAX_DRAFT, lookup_steps
from edgestill.runtime.sampling import Sampling, boost, penalize, pick

TRUNCATE = (None, "left")


def clean_text(text, what: str = "prompt", allow_empty: bool = False) -> str:
    """`text` as a str after checking it is valid Unicode (bytes must be UTF-8) and not blank."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as err:
            raise EncodingError(f"{what} is not valid UTF-8 (bad byte at offset {err.start}); decode it with "
                                f"errors='replace' or fix the source") from None
    if not isinstance(text, str):
        raise PromptError(f"{what} must be str (or UTF-8 bytes), got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise EncodingError(f"{what} holds a lone surrogate at index {err.start}, which is not valid Unicode; "
                            f"clean it with text.encode('utf-8', 'replace').decode()") from None
    if not allow_empty and not text.strip():
        raise PromptError(f"{what} is empty; give some text to answer")
    return text


def _lookup_size(prompt_lookup, sampling: Sampling) -> int:
    """The checked `prompt_lookup` draft length (0 = off)."""
    if isinstance(prompt_lookup, bool) or not isinstance(prompt_lookup, (int, np.integer)) \
            or not 0 <= prompt_lookup <= MAX_DRAFT:
        raise SamplingError(f"prompt_lookup={prompt_lookup!r}: use an integer from 0 (off) to {MAX_DRAFT} "
                            f"draft tokens per run; 2-4 suit summaries")
    if prompt_lookup and not sampling.greedy:
        raise SamplingError("prompt_lookup checks drafts against greedy picks; use temperature=0, or "
                            "prompt_lookup=0 to sample")
    return int(prompt_lookup)


def _stops(stop) -> tuple[str, ...]:
    stops = (stop,) if isinstance(stop, (str, bytes)) else tuple(stop or ())
    return tuple(clean_text(s, "stop string", allow_empty=True) for s in stops)


class Generator:
    """Generates text from one bundle with one onnxruntime session (thread safe)."""

    def __init__(self, bundle: Bundle, threads: int | None = None, providers: Sequence[str] | None = None):
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 0):
            raise SamplingError(f"threads={threads!r}: use a positive integer (or None for all cores)")
        self.bundle = bundle
        self.model = Model(bundle, threads, providers)
        self.eos = frozenset(bundle.eos_token_ids)
        self.vocab_size = self.model.vocab_size
        special = {i for i, t in bundle.tokenizer.get_added_tokens_decoder().items() if t.special}
        self._special = np.asarray(sorted(special | self.eos), dtype=np.int64)  # never copy-biased
        self.context_length = bundle.context_length
        self._guides: dict[tuple[str, ...], FieldsGuide] = {}  # per field list, built at the first extract
        self._guides_lock = threading.Lock()

    # ------------------------------------------------------------------ checks

    def _max_new(self, max_new_tokens) -> int:
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) \
                or not 1 <= max_new_tokens < self.context_length:
            raise SamplingError(f"max_new_tokens={max_new_tokens!r}: use an integer from 1 to "
                                f"{self.context_length - 1} (the context holds {self.context_length} tokens)")
        return int(max_new_tokens)

    def check_ids(self, ids: Sequence[int], max_new_tokens: int, truncate: str | None = None) -> list[int]:
        """Prompt token ids that fit the context with `max_new_tokens` (see the context policy)."""
        if truncate not in TRUNCATE:
            raise SamplingError(f"truncate={truncate!r}: use None (error when too long) or 'left'")
        ids = [int(t) for t in ids]
        if not ids:
            raise PromptError("the prompt has no tokens; give some text")
        if min(ids) < 0 or max(ids) >= self.vocab_size:
            raise PromptError(f"prompt token ids must be in 0..{self.vocab_size - 1}")
        room = self.context_length - max_new_tokens  # max_new_tokens 0: logits() of a whole sequence
        if len(ids) > room:
            if truncate != "left":
                raise ContextLengthError(
                    f"prompt of {len(ids)} tokens + max_new_tokens {max_new_tokens} exceeds the context of "
                    f"{self.context_length} tokens; shorten the prompt, lower max_new_tokens, or pass "
                    f"truncate='left' to drop the oldest prompt tokens")
            ids = ids[len(ids) - room:]
        return ids

    def encode(self, text, raw: bool = False) -> list[int]:
        """Token ids of the checked `text` in the bundle's prompt template (see Bundle.format_prompt)."""
        return self.bundle.encode(clean_text(text), raw=raw)

    # ------------------------------------------------------------------ token level

    def with_copy_bias(self, sampling: dict) -> dict:
        """`sampling` with the bundle's copy bias where the caller gave none (text-level calls)."""
        bias = sampling.get("copy_bias")
        return {**sampling, "copy_bias": self.bundle.copy_bias if bias is None else bias}

    def copy_ids(self, text: str) -> list[int]:
        """The token ids the copy bias favours for an input `text`: its tokens, also as they read
        after a space (so its first word counts inside the answer too)."""
        encode = self.bundle.tokenizer.encode
        return encode(text, add_special_tokens=False).ids + encode(" " + text, add_special_tokens=False).ids

    def _chooser(self, sampling: Sampling, prompt: list[int],
                 copy: Sequence[int] | None = None) -> Callable[[np.ndarray], int]:
        """The step's token choice; the copy bias favours `copy` (default: the prompt's tokens), never a
        special or end token."""
        rng = np.random.default_rng(sampling.seed)
        seen = np.zeros(self.vocab_size, dtype=bool)
        seen[prompt] = True
        penalty, bias = sampling.repetition_penalty, sampling.copy_bias
        favoured = np.empty(0, dtype=np.int64)
        if bias:
            favoured = np.setdiff1d(np.asarray(prompt if copy is None else copy, dtype=np.int64), self._special)
            favoured = favoured[(favoured >= 0) & (favoured < self.vocab_size)]

        def choose(logits: np.ndarray) -> int:
            logits = boost(logits, favoured, bias)
            if penalty != 1.0:
                logits = penalize(logits, np.flatnonzero(seen), penalty)
            token = int(np.argmax(logits)) if sampling.greedy else \
                pick(logits, sampling.temperature, sampling.top_k, sampling.top_p, rng)
            seen[token] = True
            return token
        return choose

    def _steps(self, rows: list[list[int]], max_new: int, sampling: Sampling, ignore_eos: bool,
               done: np.ndarray, copies: Sequence | None = None) -> Iterator[np.ndarray]:
        """Yield, per decode step, one token id per row (-1 for a finished row). The caller may set
        `done[row]` to finish a row early; a row also finishes at eos (not yielded). `copies`: per
        row, the ids the copy bias favours (default: the row's prompt)."""
        cache = self.model.new_cache(len(rows), max(map(len, rows)) + max_new)
        choosers = [self._chooser(sampling, row, copies[b] if copies else None) for b, row in enumerate(rows)]
        logits = np.stack([cache.prefill(b, row) for b, row in enumerate(rows)])
        eos = frozenset() if ignore_eos else self.eos
        pad = min(self.eos) if self.eos else 0
        tokens = np.empty(len(rows), dtype=np.int64)
        for step in range(max_new):
            for b, choose in enumerate(choosers):
                token = -1 if done[b] else choose(logits[b])
                if token in eos:
                    token, done[b] = -1, True
                tokens[b] = token
            if done.all() and (tokens < 0).all():
                return
            yield tokens
            if step + 1 == max_new or done.all():
                return
            logits = cache.step(np.where(tokens < 0, pad, tokens))

    def stream_ids(self, prompt_ids: Sequence[int], max_new_tokens: int, temperature: float = 0.0,
                   top_k: int = 0, top_p: float = 1.0, seed: int | None = None, ignore_eos: bool = False,
                   repetition_penalty: float = 1.0, truncate: str | None = None,
                   prompt_lookup: int = 0, copy_bias: float = 0.0,
                   copy_ids: Sequence[int] | None = None) -> Iterator[int]:
        """Yield up to `max_new_tokens` new token ids; the first right after prefill.

        Stops before yielding an eos id unless `ignore_eos` (then exactly `max_new_tokens`).
        `prompt_lookup` > 0 (greedy only) drafts up to that many tokens a run from n-grams already
        in the text (runtime/lookup.py): the same tokens up to rounding, fewer runs where the answer
        copies (graphs without a shared KV buffer decode plainly). `copy_bias` is added to the logits
        of `copy_ids` (default: the prompt's tokens), never to a special or end token; at this token
        level it is off unless given (the text-level calls default to the bundle's).
        Arguments are checked now, before the first token.
        """
        max_new = self._max_new(max_new_tokens)
        sampling = Sampling(temperature, top_k, top_p, repetition_penalty, seed, copy_bias).checked(self.vocab_size)
        lookup = _lookup_size(prompt_lookup, sampling)
        ids = self.check_ids(prompt_ids, max_new, truncate)
        if lookup and self.model.share_buffer:
            cache = self.model.new_cache(1, len(ids) + max_new)
            eos = frozenset() if ignore_eos else self.eos
            return lookup_steps(cache, self._chooser(sampling, ids, copy_ids), ids, max_new, lookup, eos)
        return self._stream_one(ids, max_new, sampling, ignore_eos, copy_ids)

    def _stream_one(self, ids, max_new, sampling, ignore_eos, copy_ids=None) -> Iterator[int]:
        copies = None if copy_ids is None else [copy_ids]
        for tokens in self._steps([ids], max_new, sampling, ignore_eos, np.zeros(1, dtype=bool), copies):
            if tokens[0] < 0:
                return
            yield int(tokens[0])

    def generate_ids_batch(self, prompts_ids: Sequence[Sequence[int]], max_new_tokens: int,
                           ignore_eos: bool = False, truncate: str | None = None, **sampling) -> list[list[int]]:
        """New token ids for each prompt, decoded together as one batch (same ids as one by one)."""
        return [answer for answer, _ in self._batch(prompts_ids, max_new_tokens, (), ignore_eos, truncate, sampling)]

    def _batch(self, prompts_ids, max_new_tokens, stop, ignore_eos, truncate, sampling,
               copies=None) -> list[tuple[list, Answer]]:
        if not isinstance(prompts_ids, (list, tuple)) or not prompts_ids:
            raise PromptError("give a non-empty list of prompts")
        max_new = self._max_new(max_new_tokens)
        if sampling.pop("prompt_lookup", 0):
            raise SamplingError("prompt_lookup drafts for one prompt at a time; drop it for batches")
        settings = Sampling(**sampling).checked(self.vocab_size)
        rows = [self.check_ids(ids, max_new, truncate) for ids in prompts_ids]
        out = [([], Answer(self.bundle.tokenizer, stop)) for _ in rows]
        done = np.zeros(len(rows), dtype=bool)
        for tokens in self._steps(rows, max_new, settings, ignore_eos, done, copies):
            for b, token in enumerate(tokens):
                if token >= 0:
                    out[b][0].append(int(token))
                    out[b][1].push(int(token))
                    done[b] |= out[b][1].stopped
        for _, answer in out:
            answer.finish()
        return out

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Logits [len(ids), vocab] (float32) for a whole sequence in one pass (export validation)."""
        ids = self.check_ids(ids, 0)
        cache = self.model.new_cache(1, len(ids))
        return cache.prefill_all(ids).astype(np.float32, copy=True)

    # ------------------------------------------------------------------ text level

    def choose(self, text, choices: Sequence[str] | None = None, raw: bool = False,
               truncate: str | None = None) -> Choice:
        """The one of `choices` (default: the bundle's labels) the model finds most likely after the
        prompt of `text`, with every choice's log-likelihood (runtime/choices.py)."""
        if choices is None and not self.bundle.labels:
            raise PromptError(f"bundle {self.bundle.path} has no task labels; pass choices=[...]")
        choices = check_choices(self.bundle.labels if choices is None else choices, self.context_length)
        eos = self.bundle.eos_token_ids[:1]
        ids = [self.bundle.tokenizer.encode(c, add_special_tokens=False).ids + eos for c in choices]
        prompt = self.check_ids(self.encode(text, raw=raw), max(map(len, ids)), truncate)
        scores = score(self.model, prompt, ids)
        return Choice(choices[int(np.argmax(scores))], dict(zip(choices, scores)))

    def extract(self, text, fields: Sequence[str] | None = None, verbatim: bool | None = None,
                max_new_tokens: int = 128, raw: bool = False, truncate: str | None = None) -> dict:
        """The JSON object of `fields` (default: the bundle's) that answers `text`, decoded greedily
        among the tokens that keep the format valid (runtime/fields.py): always exactly those fields,
        in order, each a string or None. `verbatim` (default: the bundle's `task.verbatim`): each
        non-null value is a span copied from `text`."""
        if fields is None and not self.bundle.fields:
            raise PromptError(f"bundle {self.bundle.path} has no task fields; pass fields=[...]")
        fields = check_fields(self.bundle.fields if fields is None else fields)
        if verbatim is not None and not isinstance(verbatim, bool):
            raise PromptError(f"verbatim={verbatim!r}: use True, False or None (the bundle's task.verbatim)")
        max_new = self._max_new(max_new_tokens)
        text = clean_text(text)
        prompt = self.check_ids(self.encode(text, raw=raw), max_new, truncate)
        guide = self.fields_guide(fields)
        if self.bundle.verbatim if verbatim is None else verbatim:
            guide = guide.verbatim(text)
        return json.loads(decode(self.model, prompt, guide, max_new)[0])

    def fields_guide(self, fields: list[str]) -> FieldsGuide:
        """The token guide for `fields` on this bundle's tokenizer (built once per field list)."""
        with self._guides_lock:
            if tuple(fields) not in self._guides:
                table = next(iter(self._guides.values())).table if self._guides else \
                    TokenTable.of(token_pieces(self.bundle.tokenizer))
                self._guides[tuple(fields)] = FieldsGuide(FieldsFormat(fields), table, self.vocab_size,
                                                          self.bundle.eos_token_ids[0])
            return self._guides[tuple(fields)]

    def stream(self, text, max_new_tokens: int = 64, stop: Sequence[str] = (), raw: bool = False,
               truncate: str | None = None, **sampling) -> Iterator[str]:
        """Yield text pieces of the answer to `text` (prompted with the bundle's template unless `raw`).

        `sampling`: temperature, top_k, top_p, repetition_penalty, seed, ignore_eos, prompt_lookup,
        copy_bias (see `stream_ids`; here the copy bias favours the tokens of `text` and defaults to
        the bundle's, manifest "task": {"copy_bias"}, else 0). Generation ends
        at eos, after `max_new_tokens`, or at the first `stop` string (which is not yielded). Pieces
        never split a character.
        """
        copy = None if raw else self.copy_ids(clean_text(text))
        ids = self.stream_ids(self.encode(text, raw), max_new_tokens, truncate=truncate, copy_ids=copy,
                              **self.with_copy_bias(sampling))
        return self.pieces(ids, stop)

    def pieces(self, ids: Iterator[int], stop: Sequence[str] = ()) -> Iterator[str]:
        """Text pieces for a stream of token ids, cut at the first `stop` string."""
        answer = Answer(self.bundle.tokenizer, _stops(stop))
        for token in ids:
            piece = answer.push(token)
            if piece:
                yield piece
            if answer.stopped:
                return
        tail = answer.finish()
        if tail:
            yield tail

    def generate(self, text, max_new_tokens: int = 64, stop: Sequence[str] = (), raw: bool = False,
                 truncate: str | None = None, **sampling) -> str:
        """The whole answer to `text` as one string (see `stream`)."""
        return "".join(self.stream(text, max_new_tokens, stop, raw, truncate, **sampling))

    def generate_batch(self, texts: Sequence, max_new_tokens: int = 64, stop: Sequence[str] = (),
                       raw: bool = False, truncate: str | None = None, ignore_eos: bool = False,
                       **sampling) -> list[str]:
        """Answers to several prompts, decoded together (greedy answers equal `generate`'s)."""
        if not isinstance(texts, (list, tuple)) or not texts:
            raise PromptError("generate_batch needs a non-empty list of prompts")
        rows = [self.encode(text, raw) for text in texts]
        copies = None if raw else [self.copy_ids(clean_text(text)) for text in texts]
        out = self._batch(rows, max_new_tokens, _stops(stop), ignore_eos, truncate, self.with_copy_bias(sampling),
                          copies)
        return ["".join(answer.pieces) for _, answer in out]

    def chat_prompt(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """The prompt text for `messages` as transformers' apply_chat_template renders it."""
        from edgestill.runtime.chat_template import (  # jinja2 only when chatting
            check_messages,
            render_chat,
        )
        messages = check_messages(messages)
        for i, message in enumerate(messages):
            message["content"] = clean_text(message["content"], f"messages[{i}].content", allow_empty=True)
        if not any(m["content"].strip() for m in messages):
            raise PromptError("every message is empty; give some text to answer")
        return render_chat(self.bundle.chat_template, messages, self.bundle.special_tokens, add_generation_prompt)

    def chat_stream(self, messages: list[dict], max_new_tokens: int = 256, stop: Sequence[str] = (),
                    truncate: str | None = None, **sampling) -> Iterator[str]:
        """Stream the assistant's next message for `messages` ([{"role", "content"}, ...])."""
        return self.stream(self.chat_prompt(messages), max_new_tokens, stop, True, truncate, **sampling)

    def chat(self, messages: list[dict], max_new_tokens: int = 256, stop: Sequence[str] = (),
             truncate: str | None = None, **sampling) -> str:
        """The assistant's next message for `messages`, rendered with the bundle's chat template."""
        return "".join(self.chat_stream(messages, max_new_tokens, stop, truncate, **sampling))
