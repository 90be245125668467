"""The task score of an exported GGUF (`gguf-*/`) in llama.cpp (llama-cpp-python), on the same eval
records and with the same answer rules as our runtime's bundles (benchmarks/quality.py):

- a label task: the label whose tokens + end token are most likely after the prompt (as
  `Generator.choose`), never free text;
- free text: greedy decoding up to the end token or `max_new_tokens`;
- a fields task: greedy among the tokens that keep the JSON valid, by our runtime's own automaton
  (runtime/fields.py, `task.verbatim` included) over the GGUF's vocabulary, with llama.cpp giving the
  logits: the same answer rule as `Generator.extract`, so the score measures the model file, not a
  different constraint. (An app in llama.cpp would pass a GBNF grammar instead; that grammar cannot
  say "a span of the input", so it is not what is measured.)

The prompt is the manifest's template and instruction, tokenized by llama.cpp from the GGUF's own
vocabulary (export checked it equals the student's tokenizer.json).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgestill.benchmarks.peers import gguf_file, llama_greedy_ids
from edgestill.runtime.fields import FieldsFormat, FieldsGuide, TokenTable, decode
from edgestill.runtime.generator import clean_text


def prompt_text(manifest: dict, text: str, chat_template: str | None = None) -> str:
    """instruction + blank line + input in the manifest's prompt template, else in the GGUF's own chat
    template (one user turn, generation prompt), else bare."""
    prompt = manifest.get("prompt") or {}
    instruction = prompt.get("instruction") or ""
    user = f"{instruction}\n\n{text}" if instruction else text
    if prompt.get("template"):
        return prompt["template"].replace("{user}", user)  # not str.format: templates hold braces
    if chat_template:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        return env.from_string(chat_template).render(messages=[{"role": "user", "content": user}],
                                                     add_generation_prompt=True)
    return user


def continuation_logp(llm, ids: list[int], cont: list[int]) -> float:
    """log P(cont | ids) from one pass over ids + cont."""
    llm.reset()
    llm.eval(ids + cont)
    logits = np.asarray(llm.scores[len(ids) - 1:len(ids) + len(cont) - 1], dtype=np.float64)
    logp = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
    return float(logp[np.arange(len(cont)), cont].sum())


def greedy_text(llm, ids: list[int], max_new_tokens: int) -> str:
    out = list(llama_greedy_ids(llm, ids, max_new_tokens, stop=llm.token_eos()))
    return llm.detokenize(out).decode("utf-8", errors="replace").strip()


class LlamaModel:
    """A llama.cpp model seen as a runtime `engine.Model` by `runtime.fields.decode`: one cache at a time."""

    def __init__(self, llm):
        self.llm = llm

    def new_cache(self, batch: int, capacity: int) -> "LlamaModel":
        self.llm.reset()
        return self

    def prefill(self, row: int, ids: list[int]) -> np.ndarray:
        self.llm.eval(list(ids))
        return np.asarray(self.llm.scores[self.llm.n_tokens - 1], dtype=np.float32)

    def step(self, tokens: np.ndarray) -> np.ndarray:
        self.llm.eval([int(tokens[0])])
        return np.asarray(self.llm.scores[self.llm.n_tokens - 1:self.llm.n_tokens], dtype=np.float32)


def token_bytes(llm, token: int) -> bytes:
    """A token's bytes from llama.cpp (control tokens: b""); llama-cpp-python's own `detokenize` cuts
    every token at 32 bytes, which long whitespace and dash runs pass."""
    import ctypes

    import llama_cpp

    size = 64
    while True:
        buf = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_token_to_piece(llm._model.vocab, token, buf, size, 0, False)
        if n >= 0:
            return buf.raw[:n]
        size = -n  # the piece's length: ask again with room for it


def fields_guide(llm, fields: list[str]) -> FieldsGuide:
    """The JSON automaton's token guide over the GGUF's vocabulary (special tokens have no bytes)."""
    special = {llm.token_bos(), llm.token_eos()}
    pieces = [None if i in special else token_bytes(llm, i) or None for i in range(llm.n_vocab())]
    return FieldsGuide(FieldsFormat(fields), TokenTable.of(pieces), llm.n_vocab(), llm.token_eos())


def fields_answer(llm, guide: FieldsGuide, ids: list[int], text: str, verbatim: bool, max_new_tokens: int) -> str:
    """One JSON object of the guide's fields, as `Generator.extract` decodes it, written as json.dumps."""
    if verbatim:
        guide = guide.verbatim(text)
    return json.dumps(json.loads(decode(LlamaModel(llm), ids, guide, max_new_tokens)[0]), ensure_ascii=False)


def gguf_outputs(folder: Path, records: list[dict], max_new_tokens: int, threads: int,
                 progress=None) -> list[str]:
    """The GGUF's answer to each record's input (a label, free text, or a fields task's JSON object)."""
    from llama_cpp import Llama

    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    task = manifest.get("task") or {}
    llm = Llama(model_path=str(gguf_file(folder)), n_ctx=4096, n_threads=threads, logits_all=True, verbose=False)
    prompts = [prompt_text(manifest, r["input"], llm.metadata.get("tokenizer.chat_template")) for r in records]
    tokenize = llm.tokenize
    labels = task.get("labels") or []
    label_ids = [tokenize(label.encode(), add_bos=False, special=False) + [llm.token_eos()] for label in labels]
    guide = fields_guide(llm, task["fields"]) if task.get("fields") and not labels else None
    outputs = []
    for prompt, record in zip(prompts, records):
        ids = tokenize(prompt.encode(), add_bos=False, special=True)
        if guide is not None:
            outputs.append(fields_answer(llm, guide, ids, clean_text(record["input"]), bool(task.get("verbatim")),
                                         max_new_tokens))
        elif labels:
            scores = [continuation_logp(llm, ids, cont) for cont in label_ids]
            outputs.append(labels[int(np.argmax(scores))])
        else:
            outputs.append(greedy_text(llm, ids, max_new_tokens))
        if progress is not None:
            progress.update(1)
    llm.close()
    return outputs
