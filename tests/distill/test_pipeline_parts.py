"""Teacher answers (resume after a kill), training (loss falls, resume is exact) on tiny models."""

import copy
import json

import numpy as np
import pytest
import torch

from edgestill.distill import train as train_mod
from edgestill.distill.answers import prepare_answers
from edgestill.distill.inputs import prepare_inputs
from edgestill.distill.prompts import STUDENT_CHAT_TEMPLATE
from edgestill.distill.student import make_student
from edgestill.distill.topk import TopkStore
from edgestill.distill.train import build_examples, collate, train
from edgestill.recipe import load_recipe
from tests.conftest import write_tiny_recipe

TEXTS = [f"Paragraph {i}: the team met on day {i} and agreed to ship feature {i * 7} by next month." for i in range(14)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_llama_dir):
    """(recipe, teacher model, tokenizer, data dir, records) with answers from the tiny teacher."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = tmp_path_factory.mktemp("tiny-recipe")
    recipe = load_recipe(write_tiny_recipe(
        root, "tiny", tiny_llama_dir, TEXTS,
        task={"n_train": 10, "n_eval": 4, "max_output_tokens": 6}, teacher={"batch_size": 4},
        student={"layers": [1]},
        distill={"steps": 6, "batch_size": 4, "lr": 1.0e-3, "warmup_steps": 1, "checkpoint_every": 3,
                 "loss": {"top_k": 8}}))
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    data = root / "data"
    inputs = prepare_inputs(recipe, data, model, tok)
    records = prepare_answers(recipe, data, inputs, model, tok, "tiny")
    return recipe, model, tok, data, records


def test_inputs_split_and_answers(tiny):
    recipe, _, _, data, records = tiny
    assert [r["split"] for r in records].count("eval") == 4
    assert [r["split"] for r in records].count("train") == 10
    assert [r["input"] for r in records] == TEXTS[:14]
    store = TopkStore(data, 8, 49152)
    for r in records:
        assert 1 <= r["topk_len"] == len(r["target_ids"]) <= 6
        ids, logp = store.read(r["topk_offset"], r["topk_len"])
        assert ids.shape == (r["topk_len"], 8)
        # greedy decoding: the answer token is the teacher's top-1 at every step
        assert ids[:, 0].tolist() == r["target_ids"]
        assert (np.diff(logp, axis=1) <= 1e-3).all()  # sorted, descending


def test_answers_resume_after_kill_without_gaps_or_duplicates(tiny, tmp_path):
    recipe, model, tok, data, records = tiny
    lines = (data / "teacher.jsonl").read_text().splitlines(keepends=True)
    killed = tmp_path / "data"
    killed.mkdir()
    (killed / "inputs.jsonl").write_text((data / "inputs.jsonl").read_text())
    keep = 5
    (killed / "teacher.jsonl").write_text("".join(lines[:keep]) + lines[keep][:20])  # torn 6th line
    store = TopkStore(data, 8, len(tok))
    end = records[keep]["topk_offset"] + 2  # rows of the 6th answer half written
    ids, logp = store.read(0, end)
    TopkStore(killed, 8, len(tok)).append(ids, logp)
    inputs = [json.loads(x) for x in (killed / "inputs.jsonl").read_text().splitlines()]
    resumed = prepare_answers(recipe, killed, inputs, model, tok, "tiny")
    assert [r["id"] for r in resumed] == list(range(14))
    assert [r["output"] for r in resumed] == [r["output"] for r in records]
    a, b = TopkStore(killed, 8, len(tok)), TopkStore(data, 8, len(tok))
    assert a.rows() == b.rows()
    assert (a.read(0, a.rows())[0] == b.read(0, b.rows())[0]).all()


def _examples(tiny):
    recipe, model, tok, data, records = tiny
    stok = copy.deepcopy(tok)
    stok.chat_template = STUDENT_CHAT_TEMPLATE
    store = TopkStore(data, 8, len(tok))
    return stok, build_examples([r for r in records if r["split"] == "train"], stok, "Summarize.", store)


def test_collate_points_at_answer_tokens(tiny):
    stok, examples = _examples(tiny)
    batch = collate(examples[:3], stok.pad_token_id)
    ids = batch["input_ids"]
    # each answer position predicts the next token of the sequence
    assert torch.equal(ids[batch["rows"], batch["cols"] + 1], batch["targets"])
    assert batch["topk_ids"].shape == (len(batch["targets"]), 8)
    assert int(batch["attention_mask"][0].sum()) == len(examples[0].input_ids)


def test_training_lowers_loss_and_resume_is_exact(tiny, tmp_path, monkeypatch):
    recipe, teacher, tok, _, _ = tiny
    stok, examples = _examples(tiny)
    recipe = copy.deepcopy(recipe)
    recipe.distill.steps = 12
    torch.manual_seed(0)
    straight = make_student(teacher, [1])
    summary = train(recipe, straight, stok, examples, tmp_path / "a")
    assert summary["last_loss"]["loss"] < summary["first_loss"]["loss"]

    real_save = train_mod._save_checkpoint

    def save_then_die(folder, model, opt, sched, step, history):
        real_save(folder, model, opt, sched, step, history)
        if step == 6:
            raise KeyboardInterrupt  # the run is killed right after its step-6 checkpoint

    monkeypatch.setattr(train_mod, "_save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(recipe, make_student(teacher, [1]), stok, examples, tmp_path / "b")
    monkeypatch.setattr(train_mod, "_save_checkpoint", real_save)
    resumed = make_student(teacher, [1])
    summary_b = train(recipe, resumed, stok, examples, tmp_path / "b")
    assert summary_b["resumed_from"] == 6
    for (name, p), q in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(p, q, atol=1e-6), name


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_arithmetic_follows_distill_precision(tiny, tmp_path, precision):
    """bf16: the student's matmuls run under bf16 autocast, its weights stay fp32; fp32: no autocast."""
    recipe, teacher, tok, _, _ = tiny
    stok, examples = _examples(tiny)
    recipe = copy.deepcopy(recipe)
    recipe.distill.steps, recipe.distill.precision = 12, precision
    torch.manual_seed(0)
    student = make_student(teacher, [1])
    seen = []
    hook = student.model.layers[0].mlp.down_proj.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    summary = train(recipe, student, stok, examples, tmp_path / precision)
    hook.remove()
    assert set(seen) == {torch.bfloat16 if precision == "bf16" else torch.float32}
    assert summary["precision"] == precision
    assert {p.dtype for p in student.parameters()} == {torch.float32}  # fp32 master weights
    assert summary["last_loss"]["loss"] < summary["first_loss"]["loss"]


def test_normalisation_weights_train_at_norm_lr_scale_times_the_learning_rate(tiny, tmp_path):
    """One step from the same start: the RMSNorm weights move by about norm_lr_scale x what they move
    at full lr (Adam's first step is lr x sign(grad)); the other weights move the same."""
    recipe, teacher, tok, _, _ = tiny
    stok, examples = _examples(tiny)
    moved = {}
    for scale in (1.0, 0.1):
        r = copy.deepcopy(recipe)
        r.distill.steps, r.distill.warmup_steps, r.distill.norm_lr_scale = 1, 1, scale
        r.distill.precision = "fp32"
        torch.manual_seed(0)
        student = make_student(teacher, [1])
        before = {n: p.detach().clone() for n, p in student.named_parameters()}
        train(r, student, stok, examples, tmp_path / f"scale{scale}")
        moved[scale] = {n: float((p.detach() - before[n]).abs().max()) for n, p in student.named_parameters()}
    norms = [n for n in moved[1.0] if "norm" in n]
    assert norms and all(moved[0.1][n] == pytest.approx(0.1 * moved[1.0][n], rel=0.02) for n in norms)
    assert all(moved[0.1][n] == pytest.approx(moved[1.0][n], rel=0.02) for n in moved[1.0] if n not in norms)


def test_a_checkpoint_whose_optimizer_does_not_fit_is_a_clear_error(tiny, tmp_path):
    """A checkpoint from a version with one optimizer group (before norm_lr_scale) is refused by name."""
    from edgestill.errors import UserError

    recipe, teacher, tok, _, _ = tiny
    stok, examples = _examples(tiny)
    r = copy.deepcopy(recipe)
    r.distill.steps, r.distill.checkpoint_every = 2, 1
    train(r, make_student(teacher, [1]), stok, examples, tmp_path / "ckpt")
    states = torch.load(tmp_path / "ckpt" / "optimizer.pt", weights_only=True)
    opt = states["optimizer"]
    opt["param_groups"] = [{**opt["param_groups"][0],
                            "params": [i for g in opt["param_groups"] for i in g["params"]]}]
    torch.save(states, tmp_path / "ckpt" / "optimizer.pt")
    r.distill.steps = 4
    with pytest.raises(UserError, match="does not fit the optimizer.*delete the folder"):
        train(r, make_student(teacher, [1]), stok, examples, tmp_path / "ckpt")


def test_norm_lr_scale_out_of_range_is_refused(tmp_path, tiny_llama_dir):
    from edgestill.errors import UserError

    path = write_tiny_recipe(tmp_path, "n", tiny_llama_dir, TEXTS, distill={"norm_lr_scale": -1})
    with pytest.raises(UserError, match="distill.norm_lr_scale"):
        load_recipe(path)


def test_gradient_accumulation_gives_the_same_steps(tiny, tmp_path):
    """A step cut into micro-batches (weighted by answer tokens) equals the whole-batch step."""
    recipe, teacher, tok, _, _ = tiny
    stok, examples = _examples(tiny)
    students = []
    for accum in (1, 2, 4):
        r = copy.deepcopy(recipe)
        r.distill.steps, r.distill.grad_accum = 4, accum
        r.distill.precision = "fp32"  # bf16 rounds each micro-batch's shapes differently
        torch.manual_seed(0)
        student = make_student(teacher, [1])
        summary = train(r, student, stok, examples, tmp_path / f"accum{accum}")
        students.append((student, [h["loss"] for h in summary["history"]]))
    (base, base_losses), *others = students
    for student, losses in others:
        assert np.allclose(losses, base_losses, rtol=1e-5)
        for (name, p), q in zip(base.state_dict().items(), student.state_dict().values()):
            assert torch.allclose(p, q, atol=1e-5), name


def test_sft_baseline_loss_has_no_soft_targets(tiny):
    from edgestill.distill.train import sft_loss

    recipe = tiny[0]
    assert sft_loss(recipe.distill.loss).kind == "sft" and sft_loss(recipe.distill.loss).alpha == 1.0
    assert recipe.distill.loss.alpha < 1.0  # the recipe itself still blends in soft targets


def test_rationales_become_a_second_task_with_hard_targets_only(tiny):
    from edgestill.distill.train import RATIONALE_PREFIX

    _, _, tok, data, records = tiny
    stok = copy.deepcopy(tok)
    stok.chat_template = STUDENT_CHAT_TEMPLATE
    train_recs = [dict(r, rationale=f"Because item {r['id']} says so.") for r in records if r["split"] == "train"]
    store = TopkStore(data, 8, len(tok))
    plain = build_examples(train_recs, stok, "Summarize.", store)
    both = build_examples(train_recs, stok, "Summarize.", store, rationale=True)
    assert len(both) == 2 * len(plain)
    assert [e.input_ids for e in both[::2]] == [e.input_ids for e in plain]  # label task unchanged
    second = both[1]
    prompt = stok.decode(second.input_ids[:second.n_prompt])
    assert RATIONALE_PREFIX + "Summarize." in prompt
    assert stok.decode(second.input_ids[second.n_prompt:], skip_special_tokens=True) == f"Because item {train_recs[0]['id']} says so."
    assert (second.topk_ids == -1).all()


@pytest.mark.parametrize("where", ["answer", "all"])
def test_hidden_state_loss_runs_the_teacher_and_lowers_the_distance(tiny, tmp_path, where):
    recipe, teacher, tok, data, records = tiny
    stok = copy.deepcopy(tok)
    stok.chat_template = STUDENT_CHAT_TEMPLATE
    store = TopkStore(data, 8, len(tok))
    train_recs = [r for r in records if r["split"] == "train"]
    examples = build_examples(train_recs, stok, "Summarize.", store, teacher_tok=tok, all_positions=where == "all")
    assert examples[0].t_input_ids[examples[0].t_n_prompt:] == train_recs[0]["target_ids"]
    if where == "all":  # the student's whole sequence (but its last token) is matched with the teacher's tail
        ex = examples[0]
        assert ex.h_cols == list(range(len(ex.input_ids) - 1))
        shift = len(ex.t_input_ids) - len(ex.input_ids)
        assert [ex.t_input_ids[c] for c in ex.t_h_cols] == ex.input_ids[:-1] and ex.t_h_cols[0] == shift
    recipe = copy.deepcopy(recipe)
    recipe.distill.steps = 8
    recipe.distill.loss.hidden_states = 1.0
    recipe.distill.loss.hidden_map, recipe.distill.loss.hidden_positions = ("spread", "all") if where == "all" else (
        "copied", "answer")
    torch.manual_seed(0)
    summary = train(recipe, make_student(teacher, [1]), stok, examples, tmp_path / "h", teacher=teacher,
                    teacher_pad_id=tok.pad_token_id)
    first, last = summary["history"][0], summary["history"][-1]
    cfg = recipe.distill.loss
    assert first["loss"] == pytest.approx(cfg.alpha * first["ce"] + (1 - cfg.alpha) * first["soft"] + first["hidden"], rel=1e-4)
    assert last["hidden"] < first["hidden"]
    assert all(p.grad is None or p.requires_grad for p in teacher.parameters())
    assert not any(p.requires_grad for p in teacher.parameters())  # the teacher is never trained


def test_build_student_trims_the_vocabulary_and_prunes_the_width(tiny, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from edgestill.distill.student import build_student

    recipe, teacher, tok, data, records = tiny
    recipe = copy.deepcopy(recipe)
    recipe.student.trim_vocab, recipe.student.intermediate_size = True, 64
    train_recs = [r for r in records if r["split"] == "train"]
    built = build_student(recipe, teacher, tok, train_recs)
    assert built.model.config.intermediate_size == 64
    assert built.model.config.vocab_size == len(built.tokenizer) == built.info["vocab_size"] < len(tok)
    examples = build_examples(train_recs, built.tokenizer, "Summarize.", TopkStore(data, 8, len(tok)), built.id_map)
    for e, r in zip(examples, train_recs):  # the answer is the teacher's, in student ids
        assert built.tokenizer.decode(e.input_ids[e.n_prompt:], skip_special_tokens=True).strip() == r["output"]
    summary = train(recipe, built.model, built.tokenizer, examples, tmp_path / "ckpt")
    assert summary["last_loss"]["loss"] < summary["first_loss"]["loss"]
    built.model.save_pretrained(tmp_path / "s")
    built.tokenizer.save_pretrained(tmp_path / "s")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "s")
    assert again.config.vocab_size == built.model.config.vocab_size
    assert AutoTokenizer.from_pretrained(tmp_path / "s")(TEXTS[5])["input_ids"] == built.tokenizer(TEXTS[5])["input_ids"]


def test_echo_input_scores_the_input_as_the_answer():
    from edgestill.distill.evaluate import echo_input

    records = [{"input": "the cat sat on the mat", "output": "the cat sat"},  # LCS 3: P 3/6, R 1 -> 2/3
               {"input": "red green blue", "output": "yellow"}]  # nothing shared -> 0
    result = echo_input(records)
    quality = result["quality"]
    assert quality["n_eval"] == 2 and quality["rouge_l_vs_teacher"] == pytest.approx((2 / 3 + 0.0) / 2, abs=1e-4)
    assert result["per_example"]["rouge_l_vs_teacher"] == [pytest.approx(2 / 3, abs=1e-4), 0.0]
    lo, hi = quality["rouge_l_vs_teacher_ci95"]  # resamples of {2/3, 0}: means 0, 1/3 or 2/3
    assert lo == 0.0 and hi == pytest.approx(2 / 3, abs=1e-4)
    labelled = echo_input([{**records[0], "label": "the mat"}, records[1]])["quality"]  # vs label: P 2/6, R 1 -> 0.5
    assert labelled["rouge_l_vs_label"] == pytest.approx(0.5, abs=1e-4)
