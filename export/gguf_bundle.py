"""The `gguf-*` presets: the student as one GGUF file for llama.cpp / Ollama, validated, with a manifest.

    export_gguf(student_dir, build / "gguf-q8_0", "gguf-q8_0", settings, reference, fp32_bundle)

writes `gguf-<type>/` (`model.gguf` from export/gguf_file.py, an Ollama `Modelfile`, `manifest.json`
with every file's sha256) in a temporary folder renamed at the end, so a folder with a manifest is a
finished one. Validation runs the file in llama.cpp (llama-cpp-python, `pip install 'edgestill[llama]'`)
on the held-out prompts:

- the prompt's tokens: llama.cpp's tokenizer against the student's tokenizer.json (must be equal);
- logits against the PyTorch student: `max_abs_logit_diff` over the prompts, and
  `top1_agreement_vs_fp32` at the answer positions of the held-out teacher text (prompt + the
  teacher's answer, up to 16 of them; the prompts' own positions when there is none), as the ONNX
  bundles' figure;
- greedy decoding against our runtime's fp32 bundle (PyTorch's greedy when there is none): the
  answers up to the first end token (`greedy_answers_identical`, what an app receives), and the
  first 64 tokens with the end token ignored (`greedy_tokens_identical`, the identical prefix per
  prompt), recorded.

The quality floor: top-1 agreement at least 0.999 (f32, the lossless file: llama.cpp's answers as
PyTorch's), 0.99 (f16), 0.98 (q8_0), 0.90 (q4_0), the same tokens as tokenizer.json, and for f32 and
f16 every logit within 0.25 of PyTorch's (f16 weights measured
0.095 on the 135M teacher). Greedy identity is recorded, not judged: a near-tie late in 64 tokens
may break it even for f16 (it did on one of four prompts of the teacher, at the same token where
the Q4_1 file llama.cpp's own tools made also turns). Without llama-cpp-python the file is still
written, with `validation: {"skipped": ...}` and no floor verdict.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

from edgestill.errors import UserError
from edgestill.export.bundle import ExportSettings, task_shape
from edgestill.export.gguf_file import GGUF_TYPES, special_ids, write_gguf
from edgestill.export.inputs import source_fingerprint
from edgestill.export.manifest import file_table, prompt_template
from edgestill.export.validate import GREEDY_TOKENS, Reference
from edgestill.files import atomic_write_json, atomic_write_text
from edgestill.tensors import chat_prompt, user_message

log = logging.getLogger("export")
FORMAT = "edgestill-gguf"
FORMAT_VERSION = 1
MODEL_FILE = "model.gguf"
FLOORS = {"f32": 0.999, "f16": 0.99, "q8_0": 0.98, "q4_0": 0.90}
F16_LOGIT_TOLERANCE = 0.25
AGREEMENT_PAIRS = 16
GGUF_PRESETS = tuple(f"gguf-{t}" for t in GGUF_TYPES)


def gguf_kind(precision: str) -> str:
    kind = precision.removeprefix("gguf-")
    if precision not in GGUF_PRESETS:
        raise UserError(f"export.precisions: '{precision}' is not a GGUF preset; choose one of {', '.join(GGUF_PRESETS)}")
    return kind


def modelfile(s: ExportSettings) -> str:
    """An Ollama Modelfile next to the GGUF: `ollama create NAME -f Modelfile`. The chat template and stop
    tokens come from the GGUF itself; the task's instruction is the system prompt's job in the app."""
    return (f"# Ollama: ollama create {s.name or 'student'} -f Modelfile && ollama run {s.name or 'student'}\n"
            f"FROM ./{MODEL_FILE}\nPARAMETER temperature 0\nPARAMETER num_ctx 2048\n")


def student_tokenizers(student: Path):
    """(transformers tokenizer for the chat template, tokenizers.Tokenizer as our runtime encodes)."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(student), Tokenizer.from_file(str(student / "tokenizer.json"))


def prompt_ids(hf, tok, s: ExportSettings) -> tuple[list[str], list[list[int]]]:
    """The held-out prompts (instruction + input in the student's chat template) and their ids in the
    student's tokenizer.json, as our runtime encodes them."""
    prompts = [chat_prompt(hf, user_message(s.instruction, text)) for text in s.eval_texts]
    return prompts, [tok.encode(p, add_special_tokens=False).ids for p in prompts]


def answer_sequences(hf, tok, s: ExportSettings) -> list[tuple[list[int], int]]:
    """(prompt + teacher answer ids, where the answer starts) for up to 16 held-out pairs."""
    out = []
    for text, answer, _ in list(s.quality_pairs)[:AGREEMENT_PAIRS]:
        prompt = tok.encode(chat_prompt(hf, user_message(s.instruction, text)), add_special_tokens=False).ids
        out.append((prompt + tok.encode(answer, add_special_tokens=False).ids, len(prompt)))
    return out


def llama_logits(llm, ids: list[int]) -> np.ndarray:
    llm.reset()
    llm.eval(ids)
    return np.asarray(llm.scores[:len(ids)])


def agreement(llm, reference: Reference, sequences: list[tuple[list[int], int]]) -> float:
    """Share of answer positions where llama.cpp's argmax is PyTorch's (positions start-1 .. end-2,
    those that predict the answer's tokens)."""
    agree = total = 0
    for ids, start in sequences:
        got, ref = llama_logits(llm, ids)[start - 1:-1], reference.logits(ids)[start - 1:-1]
        agree += int((got.argmax(-1) == ref.argmax(-1)).sum())
        total += len(got)
    return agree / total if total else float("nan")


def llama_greedy(llm, ids: list[int], n: int) -> list[int]:
    llm.reset()
    llm.eval(ids)
    out = []
    for _ in range(n):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(token)
        llm.eval([token])
    return out


def runtime_greedy(fp32_bundle: Path | None, reference: Reference, ids: list[int], threads: int | None) -> list[int]:
    """Our runtime's greedy tokens on the fp32 bundle (PyTorch's when there is no bundle)."""
    if fp32_bundle is None:
        return reference.greedy(ids, GREEDY_TOKENS)
    from edgestill.runtime import Bundle, Generator

    return list(Generator(Bundle.open(fp32_bundle), threads=threads).stream_ids(ids, GREEDY_TOKENS, ignore_eos=True))


def answer_part(ids: list[int], eos: set[int]) -> list[int]:
    """`ids` up to and with the first end token."""
    end = next((i for i, t in enumerate(ids) if t in eos), len(ids) - 1)
    return ids[:end + 1]


def validate_gguf(path: Path, student: Path, reference: Reference, s: ExportSettings,
                  fp32_bundle: Path | None) -> dict:
    """llama.cpp on the file against the student's tokenizer, PyTorch logits and the fp32 bundle's greedy."""
    try:
        from llama_cpp import Llama
    except ImportError:
        return {"skipped": "llama-cpp-python is not installed (pip install 'edgestill[llama]'); the file was not run"}
    hf, tok = student_tokenizers(student)
    prompts, all_ids = prompt_ids(hf, tok, s)
    sequences = answer_sequences(hf, tok, s) or [(ids, 1) for ids in all_ids]
    n_ctx = max(max(len(i) for i in all_ids) + GREEDY_TOKENS, max(len(i) for i, _ in sequences)) + 8
    llm = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=s.threads or 2, logits_all=True, verbose=False)
    tokens_equal, max_diff, identical, answers_equal, prefixes = True, 0.0, True, True, []
    eos = set(special_ids(student)["eos"])
    for prompt, ids in zip(prompts, all_ids):
        tokens_equal &= llm.tokenize(prompt.encode(), add_bos=False, special=True) == ids
        max_diff = max(max_diff, float(np.abs(llama_logits(llm, ids) - reference.logits(ids)).max()))
        want, have = runtime_greedy(fp32_bundle, reference, ids, s.threads), llama_greedy(llm, ids, GREEDY_TOKENS)
        identical &= want == have
        answers_equal &= answer_part(want, eos) == answer_part(have, eos)
        prefixes.append(next((i for i, (a, b) in enumerate(zip(want, have)) if a != b), len(want)))
    top1 = agreement(llm, reference, sequences)
    llm.close()
    return {"engine": "llama.cpp (llama-cpp-python)", "texts": len(prompts),
            "agreement_on": "teacher answers" if s.quality_pairs else "prompts", "sequences": len(sequences),
            "tokenizer_identical": tokens_equal, "max_abs_logit_diff": round(max_diff, 5),
            "top1_agreement_vs_fp32": top1, "greedy_tokens": GREEDY_TOKENS,
            "greedy_reference": "runtime fp32 bundle" if fp32_bundle else "PyTorch fp32",
            "greedy_answers_identical": answers_equal, "greedy_tokens_identical": identical,
            "greedy_identical_prefix": prefixes}


def judge_gguf(kind: str, validation: dict) -> dict | None:
    """The floor verdict: top-1 agreement vs fp32 at the type's floor (and, for f16, the same greedy
    tokens and tokenizer); None when the file was not run."""
    if "skipped" in validation:
        return None
    value = validation["top1_agreement_vs_fp32"]
    passed = value >= FLOORS[kind] and validation["tokenizer_identical"]
    if kind in ("f32", "f16"):
        passed &= validation["max_abs_logit_diff"] <= F16_LOGIT_TOLERANCE
    return {"metric": "top1_agreement_vs_fp32", "floor": FLOORS[kind], "value": value, "passed": passed,
            **({"max_abs_logit_diff_tolerance": F16_LOGIT_TOLERANCE} if kind in ("f32", "f16") else {})}


def up_to_date(out_dir: Path, precision: str, fingerprint: str, s: ExportSettings) -> dict | None:
    """The existing folder's manifest when it is this preset of these weights (kept), None when there is
    none; UserError for another folder there unless `s.overwrite`."""
    manifest_path = out_dir / "manifest.json"
    if not out_dir.exists():
        return None
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    same = (manifest.get("format") == FORMAT and manifest.get("precision") == precision
            and (manifest.get("source") or {}).get("fingerprint") == fingerprint)
    if same and not s.force and file_table(out_dir) == manifest.get("files"):
        return manifest
    if not same and not s.overwrite:
        raise UserError(f"{out_dir}: holds another model or preset; pass --overwrite (export.overwrite=true) to replace it")
    return None


def export_gguf(student: Path, out_dir: Path, precision: str, s: ExportSettings, reference: Reference,
                fp32_bundle: Path | None = None) -> dict:
    """Write and validate the `precision` GGUF of `student` into `out_dir`; its manifest."""
    kind = gguf_kind(precision)
    fingerprint = source_fingerprint(student)
    kept = up_to_date(out_dir, precision, fingerprint, s)
    if kept:
        log.info("%s: up to date, kept", out_dir)
        return kept
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    tmp.chmod(0o755)
    try:
        task = {"instruction": s.instruction, **task_shape(s)}
        info = write_gguf(student, tmp / MODEL_FILE, kind, task=task, name=s.name)
        atomic_write_text(tmp / "Modelfile", modelfile(s))
        validation = validate_gguf(tmp / MODEL_FILE, student, reference, s, fp32_bundle)
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "name": s.name or f"student-{precision}",
                    "role": s.role, "precision": precision, "params": reference.params, "gguf": info,
                    **({"task": t} if (t := task_shape(s)) else {}),
                    "prompt": {"template": prompt_template(student), "instruction": s.instruction},
                    "source": {"model_dir": str(student.resolve()), "fingerprint": fingerprint, **s.source},
                    "validation": validation, "quality_floor": judge_gguf(kind, validation),
                    "files": file_table(tmp)}
        atomic_write_json(tmp / "manifest.json", manifest)
        (tmp / "manifest.json").chmod(0o644)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest
