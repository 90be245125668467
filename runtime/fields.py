"""Format-constrained answers: one JSON object with exactly the given fields, never anything else.

    gen.extract("Dinner at Rosa's on Friday, 7 pm?", ["day", "time", "place"])
    # -> {"day": "Friday", "time": "7 pm", "place": "Rosa's"}

The answer follows the template `{"f1": <v>, "f2": <v>, ...}` as `json.dumps` writes it (", "
and ": " separators, the fields in order), each value a JSON string without quotes, backslashes
or control characters (at most `max_value_bytes` UTF-8 bytes; a longer one is closed) or
`null`. `FieldsFormat` is that template as a byte automaton; `FieldsGuide` turns an automaton
state into the set of tokens whose bytes keep it valid, so greedy decoding picks the most likely
of those. The end token is allowed only after the closing `}` (and then it is the only one). An
answer cut short by the token budget is closed with `completion` (the open value ends, the
remaining fields are null), so what comes back always parses with `json.loads`.

What a step costs: inside a value, the allowed tokens are the "plain" ones (no quote, backslash
or control byte: a precomputed length table, one vectorised comparison) plus the few tokens with
a quote that close the value and go on validly (checked once per field). Outside values (the
literal parts and `null`) the automaton has few states; each state's allowed set is found once,
by looking its literal prefixes up in a dict of token bytes, and cached.

Verbatim (`task.verbatim`, `FieldsGuide.verbatim(text)`, one guide per request): each value must
be a span of whole words of the input text. Inside a value a byte is allowed only when the value so
far plus that byte occurs in the text (as UTF-8 bytes) where a word starts and that occurrence can
still end a word within the value cap, before any byte a value cannot hold; the value closes only
where such an occurrence ends a word (`word_edges`: "Rosa's Cafe" and "6:15 am", never "Ros",
"15 am" or "Cafe "). A value starts and closes only on a whole character and, since an absent field
is null, is never empty (without nulls an empty value stays allowed); a value opens only when the
text holds a byte a value may hold. A value's first tokens are those whose bytes are a substring of
the text at a word start, found by looking every such substring up to the longest token's length
up in the dict of token bytes (a few thousand lookups, no pass over the vocabulary); its later
tokens are looked up after each place the value so far occurs at a word start; the quote-holding
tokens are walked as before. Outside values the shared guide's cached masks are filtered once per
state and request. On the events messages and SmolLM2's 49k vocabulary: about
3 ms to set up a request, 0.1 ms a step.
Plain Python + numpy: distill's teacher uses the same automaton (docs/contracts.md).
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from edgestill.runtime.errors import PromptError
from edgestill.spans import word_edges

MAX_VALUE_BYTES = 64
QUOTE, BACKSLASH = 0x22, 0x5C
NULL = b"null"
LIT, OPEN, STR, NUL, END = range(5)
# a state: (kind, field index, k); k is the offset into the literal or `null` (LIT, NUL), the value's
# bytes so far (STR), 0 otherwise
State = tuple[int, int, "int | bytes"]
_UNFIT = np.iinfo(np.int32).max  # plain_len of a token that does not fit inside a value


def check_fields(fields) -> list[str]:
    """`fields` as a list of distinct, non-empty strings; PromptError otherwise."""
    if isinstance(fields, str) or not isinstance(fields, Sequence):
        raise PromptError(f"fields={fields!r}: give a list of field names, e.g. ['day', 'time', 'place']")
    items = list(fields)
    if not items:
        raise PromptError("fields=[]: give at least one field name")
    if any(not isinstance(f, str) or not f.strip() for f in items):
        raise PromptError(f"fields={items!r}: every field name must be a non-empty string")
    if len(set(items)) != len(items):
        raise PromptError(f"fields={items!r}: every field name must be different")
    return items


def value_byte(b: int) -> bool:
    """Whether byte `b` may stand unescaped inside a value (no quote, backslash or control byte)."""
    return b >= 0x20 and b != QUOTE and b != BACKSLASH


def _last_char(data: bytes) -> tuple[int, int]:
    """(Bytes `data` holds of its last UTF-8 character, bytes that character takes); (0, 0) for none."""
    for n in range(1, min(4, len(data)) + 1):
        b = data[-n]
        if b & 0xC0 != 0x80:  # the character's first byte
            return n, 1 if b < 0x80 else 2 if b < 0xE0 else 3 if b < 0xF0 else 4
    return 0, 0


def pending(data: bytes) -> int:
    """How many bytes the last UTF-8 character of `data` still lacks (0 when it is whole)."""
    have, need = _last_char(data)
    return max(0, need - have)


class FieldsFormat:
    """The answer template as a byte automaton; a state is (kind, field index, k) (see `State`)."""

    def __init__(self, fields: Sequence[str], max_value_bytes: int = MAX_VALUE_BYTES, nulls: bool = True,
                 source: str | None = None):
        """`source`: verbatim, every value is a span of this text (see the module's doc)."""
        self.fields = list(fields)
        self.cap, self.nulls = max_value_bytes, nulls
        self.source = None if source is None else source.encode("utf-8")
        if self.source is not None:  # where a value may start and end (`word_edges`)
            self.starts, ends = word_edges(self.source)
            self.ends = {e for e in ends if not pending(self.source[max(0, e - 4):e])}  # on whole characters
            self.end_list = sorted(self.ends)
            # stop[p]: the first offset >= p holding a byte no value may hold (a value cannot run past it)
            self.stop = [len(self.source)] * (len(self.source) + 1)
            for p in range(len(self.source) - 1, -1, -1):
                self.stop[p] = p if not value_byte(self.source[p]) else self.stop[p + 1]
        # verbatim with nulls: no empty value (an absent field is null); a value opens only when one can exist
        self.nonempty = self.source is not None and nulls
        self.opens = not self.nonempty or any(map(value_byte, self.source))
        keys = [json.dumps(f).encode() for f in self.fields]
        # literal i comes before value i; the last one closes the object
        self.literals = [b"{" + keys[0] + b": "] + [b", " + k + b": " for k in keys[1:]] + [b"}"]
        self.start: State = (LIT, 0, 0)

    def step(self, state: State, b: int) -> State | None:
        """The state after byte `b`, or None when `b` breaks the format."""
        kind, i, k = state
        if kind == STR:
            if b == QUOTE:
                if self.source is not None and (pending(k) or (self.nonempty and not k)
                                                or (k and not any(p + len(k) in self.ends for p in self.placed(k)))):
                    return None  # inside a character, empty, or not ending a word
                return (LIT, i + 1, 0)
            value = k + bytes((b,))
            if len(k) >= self.cap or not value_byte(b):
                return None
            if self.source is not None and ((not k and b & 0xC0 == 0x80) or not self.closable(value)):
                return None  # starts inside a character, or no word-ending span within the cap holds it
            return (STR, i, value)
        if kind == LIT:
            literal = self.literals[i]
            if b != literal[k]:
                return None
            if k + 1 < len(literal):
                return (LIT, i, k + 1)
            return (END, 0, 0) if i == len(self.fields) else (OPEN, i, 0)
        if kind == OPEN:
            if b == QUOTE:
                return (STR, i, b"") if self.opens else None
            return (NUL, i, 1) if self.nulls and b == NULL[0] else None
        if kind == NUL and b == NULL[k]:
            return (NUL, i, k + 1) if k + 1 < len(NULL) else (LIT, i + 1, 0)
        return None

    def placed(self, value: bytes) -> list[int]:
        """Where `value` occurs in the source starting a word (verbatim)."""
        src, at, found = self.source, self.source.find(value), []
        while at >= 0:
            if at in self.starts:
                found.append(at)
            at = src.find(value, at + 1)
        return found

    def closable(self, value: bytes) -> bool:
        """`value` occurs at a word start and that occurrence can still end a word within the cap and
        before any byte a value cannot hold (verbatim; an end inside a character is no end: `pending`)."""
        ends = self.end_list
        for at in self.placed(value):
            here = at + len(value)
            j = bisect.bisect_left(ends, here)
            if j < len(ends) and ends[j] <= min(at + self.cap, self.stop[here]):
                return True
        return False

    def walk(self, state: State | None, data: bytes) -> State | None:
        """The state after all of `data`, or None when it breaks the format."""
        for b in data:
            if state is None:
                return None
            state = self.step(state, b)
        return state

    def next_bytes(self, state: State) -> bytes:
        """The bytes that may follow `state` outside a value (a value takes almost any byte)."""
        kind, i, k = state
        if kind == LIT:
            return self.literals[i][k:k + 1]
        if kind == OPEN:
            return (b'"' if self.opens else b"") + (b"n" if self.nulls else b"")
        return NULL[k:k + 1] if kind == NUL else b""

    def completion(self, state: State) -> bytes:
        """The shortest text that closes the object from `state` (the open value ends, the
        remaining fields are null, or "" without nulls)."""
        kind, i, k = state
        empty = NULL if self.nulls else b'""'
        if kind == END:
            return b""
        if kind == LIT:
            head, i = self.literals[i][k:], i
        elif kind == OPEN:
            head, i = empty + self.literals[i + 1], i + 1
        else:
            head, i = (b'"' if kind == STR else NULL[k:]) + self.literals[i + 1], i + 1
        return head + b"".join(empty + literal for literal in self.literals[i + 1:])

    def close(self, data: bytes, state: State) -> bytes:
        """`data` (an answer so far, which left the automaton in `state`) closed by `completion`; a
        value cut inside a UTF-8 character loses that character's first bytes."""
        if state[0] == STR and pending(state[2]):
            data = data[:len(data) - _last_char(state[2])[0]]
        return data + self.completion(state)


@dataclass
class TokenTable:
    """Each token's bytes, once per tokenizer, and the indexes the guide looks tokens up in."""

    pieces: list[bytes | None]  # None: a special token, never part of an answer
    plain_len: np.ndarray       # int32: byte length of tokens made only of value bytes; _UNFIT otherwise
    quoted: list[int]           # tokens holding a quote (they may close a value and go on)
    exact: dict[bytes, list[int]]
    ordered: list[bytes]        # every token's bytes, sorted (prefix ranges by bisection)
    ordered_ids: list[int]
    longest: int

    @classmethod
    def of(cls, pieces: list[bytes | None]) -> "TokenTable":
        plain = np.full(len(pieces), _UNFIT, dtype=np.int64)
        exact: dict[bytes, list[int]] = {}
        for i, p in enumerate(pieces):
            if p:
                exact.setdefault(p, []).append(i)
                if all(map(value_byte, p)):
                    plain[i] = len(p)
        order = sorted(((p, i) for i, p in enumerate(pieces) if p))
        return cls(pieces, plain, [i for i, p in enumerate(pieces) if p and QUOTE in p], exact,
                   [p for p, _ in order], [i for _, i in order], max(map(len, exact), default=0))

    def starting_with(self, prefix: bytes) -> list[int]:
        """Ids of the tokens whose bytes start with `prefix`."""
        out, j = [], bisect.bisect_left(self.ordered, prefix)
        while j < len(self.ordered) and self.ordered[j].startswith(prefix):
            out.append(self.ordered_ids[j])
            j += 1
        return out


def _byte_level_decoder() -> dict[str, int]:
    """GPT-2's byte-to-character table, reversed: vocabulary character -> byte."""
    shown = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in shown:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def _piece_style(tokenizer) -> str | None:
    """"byte-level" (GPT-2 style), "sentencepiece" (▁ for spaces, <0xNN> byte fallback) or None."""
    decoder = json.loads(tokenizer.to_str()).get("decoder") or {}
    kinds = {d.get("type") for d in decoder.get("decoders") or [decoder]}
    if "ByteLevel" in kinds:
        return "byte-level"
    return "sentencepiece" if kinds & {"Metaspace", "ByteFallback", "Replace"} else None


def token_pieces(tokenizer) -> list[bytes | None]:
    """The bytes of every token of a `tokenizers.Tokenizer` (None for special tokens)."""
    style = _piece_style(tokenizer)
    if style is None:
        raise PromptError("fields: answers are decoded byte by byte, which needs a byte-level BPE or a "
                          "SentencePiece tokenizer; this bundle's tokenizer is neither")
    special = {i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special}
    chars = _byte_level_decoder()
    out: list[bytes | None] = []
    for i in range(tokenizer.get_vocab_size(with_added_tokens=True)):
        piece = tokenizer.id_to_token(i)
        if piece is None or i in special:
            out.append(None)
        elif style == "byte-level":
            out.append(bytes(chars[c] for c in piece) if all(c in chars for c in piece) else piece.encode())
        elif len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            out.append(bytes([int(piece[3:5], 16)]))
        else:
            out.append(piece.replace("\u2581", " ").encode())
    return out


class FieldsGuide:
    """Which tokens keep a `FieldsFormat` valid from each state, over a vocabulary of `vocab_size`."""

    def __init__(self, fmt: FieldsFormat, table: TokenTable, vocab_size: int, eos_id: int):
        self.fmt, self.table, self.vocab_size, self.eos_id = fmt, table, vocab_size, eos_id
        self.plain_len = np.full(vocab_size, _UNFIT, dtype=np.int64)
        n = min(vocab_size, len(table.pieces))
        self.plain_len[:n] = table.plain_len[:n]
        self.closers = [self._closers(i) for i in range(len(fmt.fields))]
        self.fixed: dict[State, np.ndarray] = {}  # allowed tokens of the states outside values

    def _closers(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Tokens with a quote that can close value i validly: (ids, value bytes before the quote)."""
        ids, heads = [], []
        for t in self.table.quoted:
            piece = self.table.pieces[t]
            head = piece.index(QUOTE)
            if t < self.vocab_size and all(map(value_byte, piece[:head])) \
                    and self.fmt.walk((LIT, i + 1, 0), piece[head + 1:]) is not None:
                ids.append(t)
                heads.append(head)
        return np.asarray(ids, dtype=np.int64), np.asarray(heads, dtype=np.int64)

    def allowed(self, state: State) -> np.ndarray:
        """bool [vocab_size]: the tokens that may come next in `state`."""
        kind, i, k = state
        if kind == STR:
            room = self.fmt.cap - len(k)
            mask = self.plain_len <= room
            ids, heads = self.closers[i]
            mask[ids[heads <= room]] = True
            return mask
        if state not in self.fixed:
            self.fixed[state] = self._fixed_mask(state)
        return self.fixed[state]

    def _fixed_mask(self, state: State) -> np.ndarray:
        mask = np.zeros(self.vocab_size, dtype=bool)
        if state[0] == END:
            mask[self.eos_id] = True
            return mask
        for t in self._candidates(state):
            if t < self.vocab_size and self.fmt.walk(state, self.table.pieces[t]) is not None:
                mask[t] = True
        return mask

    def _candidates(self, state: State) -> set[int]:
        """Tokens that may fit from `state`: those equal to a path through the literal parts, and
        those that start with a path ending inside a value (checked by `_fixed_mask`)."""
        found, stack = set(), [(state, b"")]
        while stack:
            s, path = stack.pop()
            found.update(self.table.exact.get(path, ()))
            if s[0] == STR:
                found.update(self.table.starting_with(path))
            elif len(path) < self.table.longest:
                stack += [(self.fmt.step(s, b), path + bytes([b])) for b in self.fmt.next_bytes(s)]
        return found

    def advance(self, state: State, token: int) -> State:
        """The state after `token` (the end token keeps the finished state)."""
        if state[0] == END:
            return state
        after = self.fmt.walk(state, self.table.pieces[token] or b"")
        if after is None:
            raise ValueError(f"token {token} breaks the fields format in state {state}")
        return after

    def pick(self, state: State, logits: np.ndarray) -> int:
        """The most likely allowed token (greedy; the lowest id on ties)."""
        return int(np.argmax(np.where(self.allowed(state), logits, -np.inf)))

    def verbatim(self, text: str) -> "VerbatimGuide":
        """This guide for one input `text` whose spans every value must be (`task.verbatim`)."""
        return VerbatimGuide(self, text)


class VerbatimGuide(FieldsGuide):
    """A `FieldsGuide` whose values are spans of one text: built per request from the shared guide
    (its token table, closers and cached masks), in a few milliseconds for a short message."""

    def __init__(self, base: FieldsGuide, text: str):
        f = base.fmt
        self.base, self.fmt = base, FieldsFormat(f.fields, f.cap, f.nulls, source=text)
        self.table, self.vocab_size, self.eos_id = base.table, base.vocab_size, base.eos_id
        self.plain_len, self.closers, self.fixed = base.plain_len, base.closers, {}
        # every plain token whose bytes are a span of the text at a word start: a value's first tokens
        self.spans = np.zeros(self.vocab_size, dtype=bool)
        self.spans[self._valid((STR, 0, b""), self._found(sorted(self.fmt.starts)))] = True

    def _found(self, starts) -> set[int]:
        """The plain tokens equal to a substring of the text that starts at one of `starts`."""
        src, longest, found = self.fmt.source, self.table.longest, set()
        for s in starts:
            for end in range(s + 1, min(s + longest, len(src)) + 1):
                found.update(self.table.exact.get(src[s:end], ()))
        return {t for t in found if t < self.vocab_size and self.plain_len[t] != _UNFIT}

    def _valid(self, state: State, tokens) -> list[int]:
        return [t for t in tokens if self.fmt.walk(state, self.table.pieces[t]) is not None]

    def allowed(self, state: State) -> np.ndarray:
        """bool [vocab_size]: the tokens that may come next in `state`."""
        kind, i, value = state
        if kind == STR:
            if value:  # go on after any place the value occurs starting a word
                ends = [at + len(value) for at in self.fmt.placed(value)]
                mask = np.zeros(self.vocab_size, dtype=bool)
                mask[self._valid(state, self._found(ends))] = True
            else:
                mask = self.spans.copy()
            mask[self._valid(state, self.closers[i][0].tolist())] = True
            return mask
        if kind == END:
            return self.base.allowed(state)
        if state not in self.fixed:  # the shared guide's mask, less what breaks the verbatim rule
            mask = np.zeros(self.vocab_size, dtype=bool)
            mask[self._valid(state, np.flatnonzero(self.base.allowed(state)).tolist())] = True
            self.fixed[state] = mask
        return self.fixed[state]


def decode(model, prompt: list[int], guide: FieldsGuide, max_new_tokens: int) -> tuple[str, int]:
    """(The JSON text answering `prompt`, tokens generated): greedy among the allowed tokens, closed
    by `completion` when the budget ends first. `model` is a runtime `engine.Model`."""
    cache = model.new_cache(1, len(prompt) + max_new_tokens)
    logits = cache.prefill(0, prompt)
    state, out, used = guide.fmt.start, bytearray(), 0
    while True:
        token = guide.pick(state, logits)
        out += guide.table.pieces[token]
        state, used = guide.advance(state, token), used + 1
        if state[0] == END or used == max_new_tokens:
            break
        logits = cache.step(np.array([token], dtype=np.int64))[0]
    return guide.fmt.close(bytes(out), state).decode("utf-8", "replace"), used
