"""A teacher behind an OpenAI-compatible server (`teacher.source: openai`).

    teacher:
      source: openai
      base_url: http://127.0.0.1:8000/v1
      model: my-model
      api_key_env: MY_KEY        # optional: the key is read from this environment variable
      tokenizer: ./my-model      # the served model's tokenizer (bundled name or local HF folder)

Inputs are sampled with chat completions (temperature 0.9, top_p 0.95, a seed per request).
Answers are greedy (temperature 0) and ask for `logprobs` / `top_logprobs`. When the server
returns them and its tokens map onto `teacher.tokenizer` (byte-level BPE servers return the
tokenizer's own pieces or their bytes), the records carry the teacher's top-k rows like a local
teacher's ("targets": "topk"). Otherwise answers are re-tokenized with that tokenizer and only
sequence-level KD is possible ("targets": "sequence"; the stored rows are one-hot); a recipe that
asks soft targets (alpha < 1) is then refused with a UserError.

Requests are retried on 429, 5xx, timeouts, refused connections and malformed JSON with
exponential backoff; a request that still fails is counted in `TeacherData.info["failures"]`
and its record skipped (a later run asks again); finished records are never lost, since
`distill.answers` appends them one by one. When `teacher.tokenizer` is a model folder (or the
bundled teacher), that model is loaded too: the student copies its layers.

Only the stdlib HTTP client is used (`urllib.request`): one small POST per request needs no
client library. Tested against `transformers serve` (tests/distill/test_server_teacher.py: no
log-probs, sequence level) and llama-cpp-python's server on the bundled GGUF
(tests/distill/test_llama_cpp_server.py: soft targets).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from edgestill.distill.answers import eos_ids
from edgestill.distill.base import base_dir
from edgestill.distill.device import torch_device
from edgestill.distill.open_teacher import OpenTeacher
from edgestill.distill.student import count_params
from edgestill.distill.teacher import load_teacher, tokenizer_dir
from edgestill.errors import UserError
from edgestill.recipe import Recipe, TeacherSource

log = logging.getLogger(__name__)

SAMPLING = {"temperature": 0.9, "top_p": 0.95}
MAX_WORKERS = 8  # requests in flight at once (capped by teacher.batch_size)
PAD_LOGP = -60000.0  # float16-finite "probability 0" for padded top-k entries
BACKOFF_S, BACKOFF_MAX_S = 0.5, 8.0
_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class ServerClient:
    """POSTs JSON to an OpenAI-compatible server with retries; counts what failed (thread-safe)."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout_s: float = 120.0,
                 retries: int = 4):
        self.base_url, self.model = base_url.rstrip("/"), model
        self.api_key, self.timeout_s, self.retries = api_key, timeout_s, retries
        self.failures: Counter = Counter()  # kind of error -> count (retried tries included)
        self.failed_requests = 0  # requests that failed after all retries
        self._lock = threading.Lock()

    @classmethod
    def from_teacher(cls, t: TeacherSource) -> "ServerClient":
        key = None
        if t.api_key_env:
            key = os.environ.get(t.api_key_env)
            if not key:
                raise UserError(f"teacher.api_key_env: environment variable {t.api_key_env} is not set; "
                                "export it with the server's API key")
        return cls(t.base_url, t.model, key, t.timeout_s, t.retries)

    def _request(self, path: str, body: dict | None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method="GET" if body is None else "POST")
        req.add_header("Content-Type", "application/json")
        if self.api_key:
            req.add_header("Authorization", f"Bearer {self.api_key}")
        with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
            return json.loads(resp.read().decode("utf-8"))

    def check(self) -> None:
        """Fail early with a clear message when nobody answers at base_url or the key is refused."""
        try:
            self._request("/models", None)
        except urllib.error.HTTPError as err:
            if err.code in (401, 403):
                raise UserError(f"teacher.base_url: {self.base_url} refused the API key (HTTP {err.code}); "
                                "check teacher.api_key_env") from None
            # some servers have no /models: the first real request decides
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", err)
            raise UserError(f"teacher.base_url: cannot reach {self.base_url} ({reason}); "
                            "start the server or fix teacher.base_url") from None

    def chat(self, messages: list[dict], **params) -> dict | None:
        """One chat completion's first choice (with its logprobs when asked), or None after all retries."""
        body = {"model": self.model, "messages": messages, "stream": False, **params}
        for attempt in range(self.retries + 1):
            kind = None
            try:
                choice = self._request("/chat/completions", body)["choices"][0]
                if not isinstance(choice.get("message", {}).get("content"), str):
                    raise ValueError("no message content")
                return choice
            except urllib.error.HTTPError as err:
                kind = f"http_{err.code}"
                if err.code not in _RETRY_STATUS:
                    self.count(kind, final=True)
                    log.warning("teacher server: HTTP %d on %s; not retried", err.code, self.base_url)
                    return None
            except (urllib.error.URLError, http.client.HTTPException, socket.timeout, TimeoutError,
                    ConnectionError) as err:
                kind = "timeout" if "timed out" in str(err) else "connection"
            except (ValueError, KeyError, IndexError, TypeError):
                kind = "malformed"
            last = attempt == self.retries
            self.count(kind, final=last)
            if not last:
                time.sleep(min(BACKOFF_MAX_S, BACKOFF_S * 2 ** attempt))
        log.warning("teacher server: request failed after %d tries (last: %s)", self.retries + 1, kind)
        return None

    def count(self, kind: str, final: bool) -> None:
        with self._lock:
            self.failures[kind] += 1
            self.failed_requests += final

    def info(self) -> dict:
        return {"base_url": self.base_url, "model": self.model, "failed_requests": self.failed_requests,
                "failures": dict(self.failures)}


def _parallel(fn, items: list, workers: int) -> list:
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(items), MAX_WORKERS))) as pool:
        return list(pool.map(fn, items))


def server_writer(client: ServerClient, workers: int):
    """`write(conversations, max_new_tokens, seed) -> texts` for `distill.inputs` (failed: "")."""

    def write(conversations: list[list[dict]], max_new_tokens: int, seed: int) -> list[str]:
        def one(i_conv):
            i, conv = i_conv
            choice = client.chat(conv, max_tokens=max_new_tokens, seed=seed + i, **SAMPLING)
            return choice["message"]["content"] if choice else ""
        return _parallel(one, list(enumerate(conversations)), workers)
    return write


# ---------------------------------------------------------------- server tokens -> local ids


class TokenMap:
    """Maps a server's token entries ({"token", "bytes"?}) to ids of a local byte-level BPE tokenizer."""

    def __init__(self, tokenizer):
        from transformers.convert_slow_tokenizer import bytes_to_unicode

        decode = {c: b for b, c in bytes_to_unicode().items()}
        self.vocab = tokenizer.get_vocab()
        special = set(tokenizer.all_special_tokens) | set(getattr(tokenizer, "added_tokens_encoder", {}))
        self.by_bytes: dict[bytes, int] = {}
        for piece, i in sorted(self.vocab.items(), key=lambda kv: kv[1]):
            raw = piece.encode() if piece in special or any(c not in decode for c in piece) \
                else bytes(decode[c] for c in piece)
            self.by_bytes.setdefault(raw, i)

    def id(self, entry: dict) -> int | None:
        raw = entry.get("bytes")
        if isinstance(raw, list) and raw:
            found = self.by_bytes.get(bytes(raw))
            if found is not None:
                return found
        token = entry.get("token")
        if not isinstance(token, str):
            return None
        found = self.by_bytes.get(token.encode())
        return found if found is not None else self.vocab.get(token)


def topk_answer(choice: dict, tokenizer, token_map: TokenMap, k: int, stop: list[int]) -> dict | None:
    """An `answer_batch`-style answer from a choice's logprobs, or None when they do not map."""
    content = ((choice.get("logprobs") or {}).get("content")) or []
    if not content:
        return None
    target_ids, rows = [], []
    for entry in content:
        tid = token_map.id(entry)
        if tid is None:
            return None
        alts = [(token_map.id(a), a.get("logprob")) for a in entry.get("top_logprobs") or []]
        row = {i: float(lp) for i, lp in alts if i is not None and isinstance(lp, (int, float))}
        row.setdefault(tid, float(entry.get("logprob", 0.0)))
        target_ids.append(tid)
        rows.append(row)
    text = choice["message"]["content"]
    if tokenizer.decode([t for t in target_ids if t not in stop], skip_special_tokens=True).strip() != text.strip():
        return None  # the pieces do not spell the answer: a different tokenizer
    return _answer(tokenizer, text, target_ids, rows, choice.get("finish_reason") == "stop", k, stop)


def sequence_answer(choice: dict, tokenizer, k: int, stop: list[int]) -> dict:
    """The answer re-tokenized with the local tokenizer; one-hot rows (sequence-level KD only)."""
    return text_answer(choice["message"]["content"], choice.get("finish_reason") == "stop", tokenizer, k, stop)


def text_answer(text: str, stopped: bool, tokenizer, k: int, stop: list[int]) -> dict:
    """An answer made from its text alone: `tokenizer`'s ids of the whole text, whitespace included
    (as a local teacher's target_ids), + stop[0] when `stopped`; one-hot rows."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return _answer(tokenizer, text, ids, [{i: 0.0} for i in ids], stopped, k, stop)


def _answer(tokenizer, text: str, target_ids: list[int], rows: list[dict], stopped: bool, k: int,
            stop: list[int]) -> dict:
    if stopped and (not target_ids or target_ids[-1] not in stop):
        target_ids, rows = target_ids + [stop[0]], rows + [{stop[0]: 0.0}]
    ended = bool(target_ids) and target_ids[-1] in stop
    ids, logp = _rows_array(rows, k, len(tokenizer))
    return {"output": text.strip(), "target_ids": target_ids, "ended": ended, "topk_ids": ids, "topk_logp": logp}


def _rows_array(rows: list[dict], k: int, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """[n, k] ids / log-probs, best first; short rows padded with distinct unused ids at PAD_LOGP
    (probability 0: the store has no "missing" id, and a probability-0 entry changes no divergence
    on the teacher's side)."""
    ids = np.zeros((len(rows), k), dtype=np.int64)
    logp = np.full((len(rows), k), PAD_LOGP, dtype=np.float32)
    for r, row in enumerate(rows):
        best = sorted(row.items(), key=lambda kv: -kv[1])[:k]
        used = {i for i, _ in best}
        pad = (i for i in range(vocab - 1, -1, -1) if i not in used)  # rare ids at the vocabulary's end
        for c in range(k):
            if c < len(best):
                ids[r, c], logp[r, c] = best[c]
            else:
                ids[r, c] = next(pad)
    return ids, logp


def server_answerer(client: ServerClient, tokenizer, stop: list[int], top_logprobs: int, workers: int):
    """`answer(user_messages, max_new_tokens, k) -> [answer | None]` for `distill.answers`;
    `top_logprobs` > 0 asks for that many alternatives per token (soft targets), 0 for none."""
    topk = top_logprobs > 0
    token_map = TokenMap(tokenizer) if topk else None

    def answer(messages: list[str], max_new_tokens: int, k: int) -> list[dict | None]:
        def one(message: str):
            params = {"max_tokens": max_new_tokens, "temperature": 0.0}
            if topk:
                params.update(logprobs=True, top_logprobs=min(k, top_logprobs))
            choice = client.chat([{"role": "user", "content": message}], **params)
            if choice is None:
                return None
            found = topk_answer(choice, tokenizer, token_map, k, stop) if topk else \
                sequence_answer(choice, tokenizer, k, stop)
            if found is None or not found["target_ids"]:
                client.count("unmapped" if found is None else "empty", final=True)
                log.warning("teacher server: an answer was %s; skipped",
                            "empty" if found else "not in teacher.tokenizer's pieces")
                return None
            return found
        return _parallel(one, messages, workers)
    return answer


def probe_targets(client: ServerClient, tokenizer, k: int, stop: list[int]) -> tuple[str, int]:
    """("topk", top_logprobs to ask) when the server returns log-probs that map onto `tokenizer`,
    else ("sequence", 0). Asks for k alternatives, then 20 (OpenAI's limit), then none (servers
    that refuse the logprobs fields with HTTP 400). Failures of the probe are not counted."""
    message = [{"role": "user", "content": "Say hello."}]
    tries = [min(k, n) for n in sorted({k, 20}, reverse=True)] + [0]
    choice = None
    for n in dict.fromkeys(tries):
        params = {"logprobs": True, "top_logprobs": n} if n else {}
        choice = client.chat(message, max_tokens=8, temperature=0.0, **params)
        if choice is not None:
            break
    if choice is None:
        raise UserError(f"teacher.base_url: {client.base_url} did not answer a test request "
                        f"({dict(client.failures)}); check teacher.model and the server's log")
    client.failures.clear()
    client.failed_requests = 0
    if n and topk_answer(choice, tokenizer, TokenMap(tokenizer), k, stop) is not None:
        return "topk", n
    return "sequence", 0


# ---------------------------------------------------------------- the TeacherData of a server


def open_server_teacher(t: TeacherSource, recipe: Recipe):
    """A `distill.data.OpenTeacher` for a server (see the module docstring): checks the server is
    up, probes whether its log-probs map onto `t.tokenizer`, and loads that folder's model when
    it has weights."""
    from transformers import AutoTokenizer

    if not t.tokenizer:  # the student has a base of its own: answers in its tokens, text only
        return _own_tokenizer_teacher(t, recipe)
    folder = tokenizer_dir(t.tokenizer)
    has_weights = (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))
    model, tok = (load_teacher(str(folder), t.load_in, torch_device(recipe.device)) if has_weights
                  else (None, AutoTokenizer.from_pretrained(folder)))
    stop = eos_ids(model, tok) if model is not None else [tok.eos_token_id]
    client = ServerClient.from_teacher(t)
    client.check()
    targets, top_logprobs = probe_targets(client, tok, recipe.distill.loss.top_k, stop)
    log.info("server teacher %s at %s: %s targets", t.model, client.base_url, targets)
    workers = getattr(t, "batch_size", MAX_WORKERS)

    def info() -> dict:
        warn_failures(client)
        found = {"source": "openai", **client.info(), "targets": targets, "top_logprobs": top_logprobs,
                 "dir": str(folder.resolve())}
        if model is not None:
            found.update(params=count_params(model), layers=model.config.num_hidden_layers)
        return found
    return OpenTeacher(f"openai:{t.model}", tok, model, server_writer(client, workers),
                       server_answerer(client, tok, stop, top_logprobs, workers), targets, info)


def warn_failures(client: ServerClient) -> None:
    """Say, once the answers are done, how many requests failed for good (their records are missing)."""
    if client.failed_requests:
        log.warning("teacher server: %d requests failed (%s); their records are missing, run again to retry",
                    client.failed_requests, dict(client.failures))


def _own_tokenizer_teacher(t: TeacherSource, recipe: Recipe):
    """A served teacher without `teacher.tokenizer` (a student.base recipe): no local teacher weights
    or vocabulary, so its answers are re-tokenized with the student base's tokenizer and the student
    learns them as text (sequence-level KD, "targets": "sequence"); its log-probs are not asked."""
    from transformers import AutoTokenizer

    folder = base_dir(recipe)
    tok = AutoTokenizer.from_pretrained(folder)
    client = ServerClient.from_teacher(t)
    client.check()
    log.info("server teacher %s at %s: sequence targets in the student base's tokens", t.model, client.base_url)
    workers = getattr(t, "batch_size", MAX_WORKERS)

    def info() -> dict:
        warn_failures(client)
        return {"source": "openai", **client.info(), "targets": "sequence", "top_logprobs": 0,
                "tokenizer": f"the student base's ({folder.resolve()})"}
    return OpenTeacher(f"openai:{t.model}", tok, None, server_writer(client, workers),
                       server_answerer(client, tok, [tok.eos_token_id], 0, workers), "sequence", info)
