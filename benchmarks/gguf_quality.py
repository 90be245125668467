"""The task score of an exported GGUF (`gguf-*/`) in llama.cpp (llama-cpp-python), on the same eval
records and with the same answer rules as our runtime's bundles (benchmarks/quality.py):

- a label task: the label whose tokens + end token are most likely after the prompt (as
  `Generator.choose`), never free text;
- free text: greedy decoding up to the end token or `max_new_tokens`;
- a fields task is not scored here: its valid-JSON guarantee is our runtime's constrained decoding,
  which llama.cpp would need a grammar for (`gguf_outputs` returns None).

The prompt is the manifest's template and instruction, tokenized by llama.cpp from the GGUF's own
vocabulary (export checked it equals the student's tokenizer.json).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgestill.benchmarks.peers import gguf_file, llama_greedy_ids


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


def gguf_outputs(folder: Path, records: list[dict], max_new_tokens: int, threads: int,
                 progress=None) -> list[str] | None:
    """The GGUF's answer to each record's input; None for a fields task (not scored in llama.cpp)."""
    from llama_cpp import Llama

    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    task = manifest.get("task") or {}
    if task.get("fields"):
        return None
    llm = Llama(model_path=str(gguf_file(folder)), n_ctx=4096, n_threads=threads, logits_all=True, verbose=False)
    prompts = [prompt_text(manifest, r["input"], llm.metadata.get("tokenizer.chat_template")) for r in records]
    tokenize = llm.tokenize
    labels = task.get("labels") or []
    label_ids = [tokenize(label.encode(), add_bos=False, special=False) + [llm.token_eos()] for label in labels]
    outputs = []
    for prompt in prompts:
        ids = tokenize(prompt.encode(), add_bos=False, special=True)
        if labels:
            scores = [continuation_logp(llm, ids, cont) for cont in label_ids]
            outputs.append(labels[int(np.argmax(scores))])
        else:
            outputs.append(greedy_text(llm, ids, max_new_tokens))
        if progress is not None:
            progress.update(1)
    llm.close()
    return outputs
