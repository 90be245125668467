"""Mixed-precision bundles: the task's own data decides which matmuls get the finer quantization.

    edgestill export recipes/default.yaml export.precisions=[int4-mixed] [export.mixed_budget=0.21]

A mixed preset (export/quantize.py) names a coarse uniform preset (most matmuls), a finer one and
a byte budget: the model's bytes (every initializer) as a fraction of the fp32 model's. Steps:

1. **Build**: onnxruntime-genai's builder writes both uniform graphs (our int8 embedding tie
   applied as for the uniform presets); what each matmul costs in fine over coarse is read from
   the two graphs' initializers.
2. **Plan** (PyTorch, a few seconds per matmul group): on calibration sequences from the train
   split of data/teacher.jsonl (prompt + teacher answer), every matmul is fake-quantized exactly
   as the coarse preset does (export/qat.py's bit-exact MatMulNBits grid and int8 activation
   rounding), then one node group at a time is switched to the fine setting and the drop of
   KL(fp32 || quantized) at the answer positions is its gain. Groups are the builder's nodes:
   q/k/v are one fused `qkv_proj` node; the LM head carries the tied embedding with it. Groups are
   taken greedily by gain per extra byte until the budget is spent (a group whose gain is not
   positive is never taken). Each group's pass reruns only the layers from its own onward, on
   the kept inputs of the all-coarse pass (`_PrefixKL`; exact, and about half the work). The
   plan, in manifest.json under `quantization.plan`, records every gain and cost, the chosen
   nodes and the simulated top-1 agreement with fp32 of coarse, mixed and fine on the eval split.
3. **Splice**: the chosen MatMulNBits nodes of the coarse graph are replaced by the fine graph's
   nodes with their weights, and, when the LM head is chosen, the embedding lookup too (it reads
   the LM head's matrix). A MatMulNBits node's bits and block size
   are its own attributes, so onnxruntime and onnxruntime-genai run the result unchanged.

This is a per-layer sensitivity search in the style of llama.cpp's mixed k-quants and HAWQ, but
calibrated on the user's task rather than a fixed layer list (the measured comparison is in
docs/log.md).
"""

from __future__ import annotations

import logging
import re
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from edgestill.errors import UserError
from edgestill.export.build import build_uniform
from edgestill.export.calibrated import calibrated_sources
from edgestill.export.calibration import (
    ALL,
    Scorer,
    calibration_ids,
    layer_inputs,
    load_sequences,
    run_layer,
)
from edgestill.export.checkpoint import load_weights
from edgestill.export.fakequant import fake_quant_activation, fake_quant_weight
from edgestill.export.onnx_build import save_with_data
from edgestill.export.quantize import preset, unsmoothed
from edgestill.tensors import kl_rows

log = logging.getLogger(__name__)

_LAYER = re.compile(r"^model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)_proj$")
_BUILDER_NAME = {"q": "attn/qkv_proj", "k": "attn/qkv_proj", "v": "attn/qkv_proj", "o": "attn/o_proj",
                 "gate": "mlp/gate_proj", "up": "mlp/up_proj", "down": "mlp/down_proj"}


def node_group(module_name: str) -> str:
    """The builder's MatMul node for a PyTorch Linear ("model.layers.3.self_attn.k_proj" ->
    "/model/layers.3/attn/qkv_proj/MatMul"); ValueError for a module the builder does not name so."""
    if module_name == "lm_head":
        return "/lm_head/MatMul"
    m = _LAYER.match(module_name)
    if not m or m.group(3) not in _BUILDER_NAME:
        raise ValueError(f"mixed precision does not know the builder's node for {module_name!r} "
                         "(supported: llama-style q/k/v/o and gate/up/down projections, lm_head)")
    return f"/model/layers.{m.group(1)}/{_BUILDER_NAME[m.group(3)]}/MatMul"


# ---------------------------------------------------------------------------- plan (PyTorch)


class _Simulated:
    """A student whose Linear weights can be switched between coarse and fine fake-quant."""

    def __init__(self, model, coarse, fine, coarse_weights: dict[str, torch.Tensor] | None = None):
        """`coarse_weights` (module name -> weight already on the coarse grid, e.g. GPTQ's) replace
        the coarse rounding of the model's own weights."""
        self.model = model
        self.linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
        self.groups: dict[str, list[str]] = {}
        for name in self.linears:
            self.groups.setdefault(node_group(name), []).append(name)
        self.settings = {"coarse": coarse, "fine": fine}
        self.weights = {}
        with torch.no_grad():
            for name, m in self.linears.items():
                self.weights[name] = {"fine": fake_quant_weight(m.weight, fine.bits, fine.block)}
                self.weights[name]["coarse"] = (fake_quant_weight(m.weight, coarse.bits, coarse.block)
                                                if coarse_weights is None else coarse_weights[name + ".weight"].float())
        self.block = {}
        for name, m in self.linears.items():
            m.register_forward_pre_hook(self._hook(name))

    def _hook(self, name):
        def pre(_m, args):
            block = self.block.get(name)
            return args if block is None else (fake_quant_activation(args[0], block),)
        return pre

    def use(self, choice: dict[str, str]) -> None:
        """choice: module name -> "coarse" | "fine" (a tied LM head moves the embedding too)."""
        with torch.no_grad():
            for name, kind in choice.items():
                self.linears[name].weight.copy_(self.weights[name][kind])
                self.block[name] = self.settings[kind].block

    def choice(self, fine_groups=()) -> dict[str, str]:
        """Every Linear coarse, except those of the node groups `fine_groups`."""
        fine = {n for g in fine_groups for n in self.groups[g]}
        return {n: "fine" if n in fine else "coarse" for n in self.linears}


class _PrefixKL:
    """KL(reference || simulated student) on calibration batches when only one node group differs
    from all-coarse: the inputs of every decoder layer are kept from one all-coarse pass, so a
    group in layer i reruns layers i.. only. The result equals a full forward pass (the layers
    before i see the same weights); a test checks it. It about halves the plan's time: the groups
    sit in every layer alike, so on average about half the layers run.

    A tied LM head moves the embedding too, so the `lm_head` group reruns everything."""

    def __init__(self, sim: _Simulated, scorer):
        self.sim, self.scorer = sim, scorer
        model = sim.model
        self.layers = model.model.layers
        head, embed = model.get_output_embeddings(), model.get_input_embeddings()
        self.tied = head is not None and embed is not None and head.weight is embed.weight
        sim.use(sim.choice())
        # per batch: (args, kwargs) of each layer, then the norm's
        self.calls: list[list[tuple[tuple, dict]]] = layer_inputs(model, [b for b, _, _ in scorer.batches])

    def start(self, group: str) -> int:
        """The first decoder layer that `group` changes."""
        if group == "/lm_head/MatMul":
            return 0 if self.tied else len(self.layers)
        return int(group.split("/")[2].split(".")[1])  # "/model/layers.3/attn/..." -> 3

    @torch.no_grad()
    def __call__(self, group: str) -> float:
        """Mean KL per answer position with `group` fine and everything else coarse."""
        self.sim.use(self.sim.choice([group]))
        first = self.start(group)
        return self.scorer(self.sim.model)[1] if first == 0 else self._kl_from(first)

    @torch.no_grad()
    def coarse(self) -> float:
        """Mean KL per answer position with every group coarse, from the kept pass (no new run)."""
        self.sim.use(self.sim.choice())
        return self._kl_from(len(self.layers))

    def _kl_from(self, first: int) -> float:
        model = self.sim.model
        kl, total = 0.0, 0
        for calls, (_, rows, cols), ref in zip(self.calls, self.scorer.batches, self.scorer.ref):
            hidden = self._tail(calls, first)
            mine = F.log_softmax(model.lm_head(model.model.norm(hidden)[rows, cols]).float(), -1)
            kl += float(kl_rows(ref, mine, ALL).sum())
            total += len(rows)
        return kl / max(total, 1)

    def _tail(self, calls, first: int) -> torch.Tensor:
        """The final norm's input after running layers `first`.. on the kept input of layer `first`."""
        hidden = calls[first][0][0]
        for layer, (args, kwargs) in zip(self.layers[first:], calls[first:]):
            hidden = run_layer(layer, hidden, args, kwargs)
        return hidden


def greedy(gains: dict[str, float], extra: dict[str, int], budget: int) -> list[str]:
    """Groups by gain per extra byte, best first, while they fit in `budget` bytes and gain > 0."""
    chosen, used = [], 0
    for g in sorted(gains, key=lambda g: -gains[g] / max(extra[g], 1)):
        if gains[g] > 0 and used + extra[g] <= budget:
            chosen.append(g)
            used += extra[g]
    return chosen


def plan_mixed(student_dir: Path, data: Path, instruction: str, coarse, fine, extra: dict[str, int],
               room: int, calibration: int = 16, sim_dir: Path | None = None, coarse_dir: Path | None = None) -> dict:
    """Which node groups get `fine` (see the module docstring). `coarse`/`fine` are Presets, `extra`
    the bytes each group costs in `fine` over `coarse`, `room` the bytes the budget leaves. The
    quantized model is simulated from `sim_dir` (default: the student; a smoothed copy computes the
    same function), its coarse weights taken from `coarse_dir`'s checkpoint when given (GPTQ's)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(student_dir)
    calib = load_sequences(data, tok, instruction, "train")[:calibration]
    held = load_sequences(data, tok, instruction, "eval")
    if not calib:
        raise UserError(f"{data}: no train records with an answer to calibrate on; run `edgestill distill RECIPE` first")
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    reference = AutoModelForCausalLM.from_pretrained(student_dir, dtype=torch.float32).eval()
    try:
        sim_model = AutoModelForCausalLM.from_pretrained(sim_dir or student_dir, dtype=torch.float32).eval()
        sim = _Simulated(sim_model, coarse, fine, load_weights(coarse_dir) if coarse_dir else None)
    except ValueError as err:
        raise UserError(f"{student_dir}: {err}; export it with a uniform preset (int4, int4-qat) instead") from None
    missing = sorted(set(sim.groups) - set(extra))
    if missing:
        raise ValueError(f"mixed precision: the built graph has no MatMulNBits node for {missing[:3]}")
    one_group = _PrefixKL(sim, Scorer(reference, calib, pad))
    base = one_group.coarse()
    gains = {group: base - one_group(group) for group in _progress(sim.groups)}
    chosen = greedy(gains, extra, room)
    simulated = {}
    if held:
        score_held = Scorer(reference, held, pad)
        for label, groups in (("coarse", []), ("mixed", chosen), ("fine", list(sim.groups))):
            sim.use(sim.choice(groups))
            simulated[label] = round(score_held(sim.model)[0], 4)
    return {"fine_nodes": chosen, "nodes": len(sim.groups), "gains_kl": {g: round(v, 7) for g, v in gains.items()},
            "extra_bytes": {g: extra[g] for g in sim.groups},
            "simulated_top1_vs_fp32": {**simulated, "positions_from": "eval split"},
            "calibration_sequences": len(calib), "seconds": round(time.perf_counter() - t0, 1)}


def _progress(items):
    from tqdm import tqdm

    return tqdm(list(items), desc="mixed precision: node sensitivity", unit="node")


# ---------------------------------------------------------------------------- build (ONNX)


def _find(model, prefix: str, op: str):
    found = [n for n in model.graph.node if n.op_type == op and (n.name == prefix or n.name.startswith(prefix + "_"))]
    if len(found) != 1:
        raise ValueError(f"mixed precision: expected one {op} node named {prefix}*, found {len(found)}")
    return found[0]


def _copy_inits(src, dst, names: list[str], suffix: str) -> dict[str, str]:
    """Copy initializers `names` of `src` into `dst` under name+suffix; returns old -> new name."""
    inits = {t.name: t for t in src.graph.initializer}
    present = {t.name for t in dst.graph.initializer}
    renamed = {}
    for name in names:
        if name in inits and name + suffix in present:
            renamed[name] = name + suffix
        elif name in inits:
            t = type(inits[name])()
            t.CopyFrom(inits[name])
            t.name = name + suffix
            dst.graph.initializer.append(t)
            renamed[name] = t.name
    return renamed


def splice(coarse, fine, nodes: list[str], suffix: str = "_fine") -> None:
    """Replace the MatMulNBits nodes `nodes` of ONNX model `coarse` (in place) by those of `fine`,
    weights and attributes; a chosen LM head also brings `fine`'s embedding lookup along."""
    for prefix in nodes:
        old, new = _find(coarse, prefix, "MatMulNBits"), _find(fine, prefix, "MatMulNBits")
        renamed = _copy_inits(fine, coarse, list(new.input[1:]), suffix)
        old.input[1:] = [renamed.get(i, i) for i in new.input[1:]]
        del old.attribute[:]
        old.attribute.extend(new.attribute)
        if prefix.startswith("/lm_head/"):
            _splice_embedding(coarse, fine, suffix)
    _drop_unused_initializers(coarse)


def _splice_embedding(coarse, fine, suffix: str) -> None:
    mine = [n for n in coarse.graph.node if n.name.startswith("/model/embed_tokens/")]
    theirs = [n for n in fine.graph.node if n.name.startswith("/model/embed_tokens/")]
    if not mine or not theirs:
        return
    produced = {o for n in theirs for o in n.output}
    renamed = _copy_inits(fine, coarse, [i for n in theirs for i in n.input if i not in produced], suffix)
    renamed[_external_output(fine, theirs)] = _external_output(coarse, mine)  # what the layers read
    at = list(coarse.graph.node).index(mine[0])
    for n in mine:
        coarse.graph.node.remove(n)
    for n in reversed(theirs):
        copy = type(n)()
        copy.CopyFrom(n)
        copy.input[:] = [renamed.get(i, i) for i in n.input]
        copy.output[:] = [renamed.get(o, o) for o in n.output]
        coarse.graph.node.insert(at, copy)


def _external_output(model, group) -> str:
    """The one output of the nodes `group` that a node outside it reads."""
    inside = {id(n) for n in group}
    read = {i for n in model.graph.node if id(n) not in inside for i in n.input}
    outs = [o for n in group for o in n.output if o in read]
    if len(outs) != 1:
        raise ValueError(f"mixed precision: the embedding lookup has {len(outs)} outputs read by the layers, expected 1")
    return outs[0]


def _drop_unused_initializers(model) -> None:
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    for t in [t for t in model.graph.initializer if t.name not in used]:
        model.graph.initializer.remove(t)


def _group_of(node_name: str) -> str:
    """"/model/layers.0/attn/qkv_proj/MatMul_Q4" -> "/model/layers.0/attn/qkv_proj/MatMul"."""
    return re.sub(r"_Q\d+$", "", node_name)


def byte_costs(coarse, fine) -> tuple[dict[str, int], int, int]:
    """(extra bytes of each MatMulNBits group in `fine` over `coarse`, the coarse model's initializer
    bytes, the fp32 model's): fp32 counts 4 bytes per matmul weight plus every other initializer."""
    from onnx import numpy_helper

    def sizes(model):
        return {t.name: numpy_helper.to_array(t).nbytes for t in model.graph.initializer}

    def nodes(model):
        return {_group_of(n.name): n for n in model.graph.node if n.op_type == "MatMulNBits"}

    cs, fs = sizes(coarse), sizes(fine)
    cn, fn = nodes(coarse), nodes(fine)
    extra = {g: sum(fs.get(i, 0) for i in fn[g].input[1:]) - sum(cs.get(i, 0) for i in n.input[1:])
             for g, n in cn.items() if g in fn}
    matrices = {i for n in cn.values() for i in n.input[1:]}
    dims = [{a.name: a.i for a in n.attribute} for n in cn.values()]
    fp32 = sum(4 * d["N"] * d["K"] for d in dims) + sum(v for k, v in cs.items() if k not in matrices)
    return extra, sum(cs.values()), fp32


def build_mixed(model_dir: Path, bundle_dir: Path, chosen, data: Path, instruction: str, log_file: Path,
                copies=None) -> dict:
    """Write the mixed bundle's model.onnx(+.data) (and the builder's other files) into `bundle_dir`
    for the mixed Preset `chosen`; returns the quantization record for manifest.json. `copies`
    (export.bundle.CalibratedCopies) shares a GPTQ coarse side's calibrated copies with other presets."""
    import onnx

    # both graphs from the same weights: the nodes are spliced, so neither side may be smoothed on its
    # own; a GPTQ coarse side is rounded from a smoothed copy, which the fine side is then built from
    coarse, fine = (unsmoothed(preset(name)) for name in chosen.mixed[:2])
    budget = chosen.mixed[2]
    with tempfile.TemporaryDirectory(dir=bundle_dir.parent, prefix=".mixed-") as tmp:
        fine_dir = Path(tmp) / "fine"
        fine_dir.mkdir()
        coarse_src = fine_src = model_dir
        gptq = None
        if coarse.gptq:
            fine_src, coarse_src, gptq = _gptq_sources(model_dir, Path(tmp), coarse, data, instruction, copies)
        coarse_record = build_uniform(coarse_src, bundle_dir, replace(coarse, gptq=False), log_file)  # rounded already
        fine_log = log_file.with_suffix(".fine.log")
        fine_record = build_uniform(fine_src, fine_dir, fine, fine_log)
        fine_log.unlink(missing_ok=True)  # kept only when the build fails
        model, fine_model = onnx.load(str(bundle_dir / "model.onnx")), onnx.load(str(fine_dir / "model.onnx"))
        extra, coarse_bytes, fp32_bytes = byte_costs(model, fine_model)
        plan = plan_mixed(model_dir, data, instruction, coarse, fine, extra, int(budget * fp32_bytes) - coarse_bytes,
                          sim_dir=fine_src if gptq else None, coarse_dir=coarse_src if gptq else None)
    splice(model, fine_model, plan["fine_nodes"])
    save_with_data(model, bundle_dir / "model.onnx")
    used = coarse_bytes + sum(extra[g] for g in plan["fine_nodes"])
    log.info("%s: %d of %d matmul groups from %s, model bytes %.1f%% of fp32 (budget %.0f%%)", chosen.precision,
             len(plan["fine_nodes"]), plan["nodes"], fine.precision, 100 * used / fp32_bytes, 100 * budget)
    return {**chosen.quantization, "coarse": coarse_record, "fine": fine_record,
            "model_bytes_fraction_of_fp32": round(used / fp32_bytes, 4), "plan": plan,
            **({"gptq": gptq} if gptq else {})}


def _gptq_sources(model_dir: Path, tmp: Path, coarse, data: Path, instruction: str,
                  copies=None) -> tuple[Path, Path, dict]:
    """(smoothed fp32 copy, its GPTQ rounding, the GPTQ record) under `tmp` or from `copies`, as the uniform GPTQ
    preset makes them: the fine graph is built from the first, the coarse from the second, so both
    share every weight that is not spliced."""
    ids = calibration_ids(model_dir, data, instruction, [])
    smoothed, rounded, records = calibrated_sources(model_dir, tmp, preset(coarse.precision), ids, copies)
    return smoothed, rounded, {**records["gptq_calibration"],
                               "activation_smoothing_calibration": records.get("activation_smoothing_calibration")}
