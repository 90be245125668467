"""Incremental detokenisation and stop strings: turn a stream of token ids into text pieces.

Byte-level BPE tokens can split one UTF-8 character, and a token's leading space only shows in
context, so decoding token by token breaks text. `TextStream` decodes a short window of recent
ids and emits only the new suffix, holding it back while it ends in an incomplete character
(U+FFFD). `StopFilter` holds back text that could be the start of a stop string and reports
when one appears; the stop string itself is never emitted.
"""

from __future__ import annotations

from tokenizers import Tokenizer


class TextStream:
    """Feed token ids one at a time; `push` returns the new text (maybe "")."""

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.skip = skip_special_tokens
        self.ids: list[int] = []
        self.prefix = 0  # start of the decode window
        self.read = 0  # ids up to here have been emitted as text

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip)

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        before = self._decode(self.ids[self.prefix:self.read])
        now = self._decode(self.ids[self.prefix:])
        if len(now) > len(before) and not now.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return now[len(before):]
        return ""

    def flush(self) -> str:
        """Whatever is still held back at the end (an incomplete character stays as U+FFFD)."""
        before = self._decode(self.ids[self.prefix:self.read])
        now = self._decode(self.ids[self.prefix:])
        self.prefix = self.read = len(self.ids)
        return now[len(before):]


class StopFilter:
    """Pass text through until a stop string appears; hold back a possible stop-string prefix."""

    def __init__(self, stops: tuple[str, ...] | list[str] = ()):
        self.stops = [s for s in stops if s]
        self.held = ""
        self.stopped = False

    def push(self, text: str) -> str:
        """Text safe to emit now; sets `stopped` when a stop string was found."""
        if not self.stops:
            return text
        self.held += text
        hits = [i for i in (self.held.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            out, self.held = self.held[:min(hits)], ""
            return out
        keep = self._partial_len()
        out = self.held[:len(self.held) - keep]
        self.held = self.held[len(self.held) - keep:]
        return out

    def _partial_len(self) -> int:
        """Length of the longest tail of `held` that is a proper prefix of some stop string."""
        best = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(self.held)), best, -1):
                if self.held.endswith(stop[:n]):
                    best = n
                    break
        return best

    def flush(self) -> str:
        out, self.held = ("" if self.stopped else self.held), ""
        return out


class Answer:
    """One answer being written: token ids in, text pieces out, cut at the first stop string."""

    def __init__(self, tokenizer: Tokenizer, stops: tuple[str, ...] | list[str] = ()):
        self.text, self.stops = TextStream(tokenizer), StopFilter(tuple(stops))
        self.pieces: list[str] = []

    @property
    def stopped(self) -> bool:
        return self.stops.stopped

    def push(self, token_id: int) -> str:
        """Text that is final once `token_id` is added (maybe ""); also kept in `pieces`."""
        piece = self.stops.push(self.text.push(token_id))
        self.pieces.append(piece)
        return piece

    def finish(self) -> str:
        """The held-back tail at the end of generation (also kept in `pieces`)."""
        tail = self.stops.push(self.text.flush())
        tail += "" if self.stops.stopped else self.stops.flush()
        self.pieces.append(tail)
        return tail
