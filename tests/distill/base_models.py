"""Tiny pretrained-student bases for the `student.base` tests, built in the test session: one with
the teacher's tokenizer, one of another family (a Qwen2 with a byte-level BPE trained on the fly)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import TINY_CONFIG, make_tiny_llama

FOREIGN_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
CORPUS = [f"On day {i} the crew of boat {i % 7} fixed pump {i * 3}, logged {i * 11} litres and met the harbour "
          f"master about storm {i % 5}. Summarize the following paragraph in one sentence." for i in range(200)]


def same_tokenizer_base(out: Path, teacher_dir: Path) -> Path:
    """A random 3-layer Llama with the teacher's tokenizer (same vocabulary and ids)."""
    return make_tiny_llama(out, teacher_dir, num_layers=3, seed=7)


def foreign_tokenizer_base(out: Path, vocab_size: int = 400) -> Path:
    """A random 2-layer Qwen2 with its own byte-level BPE (trained here on a small corpus), its own
    ChatML-style template and eos <|im_end|>; its config names <|endoftext|> as eos, as pretrained
    bases often do, so the student must put the tokenizer's eos first among its stop ids."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  bos_token=None, unk_token=None)
    tok.chat_template = FOREIGN_TEMPLATE
    cfg = Qwen2Config(**{k: v for k, v in TINY_CONFIG.items() if k != "head_dim"}, vocab_size=len(tok),
                      eos_token_id=tok.pad_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None)
    torch.manual_seed(3)
    Qwen2ForCausalLM(cfg).eval().save_pretrained(out)
    tok.save_pretrained(out)
    return out


def taught_teacher(out: Path, teacher_dir: Path, texts: list[str], instruction: str, answer: str,
                   steps: int = 40) -> Path:
    """A tiny Llama with the teacher's tokenizer trained for a few steps to answer `answer` to any of
    `texts`: a random model answers blank lines only, which leave no text to learn across tokenizers."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from edgestill.tensors import chat_prompt, user_message

    make_tiny_llama(out, teacher_dir, num_layers=2, seed=1)
    model, tok = AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    rows = []
    for t in texts:
        prompt = tok(chat_prompt(tok, user_message(instruction, t)), add_special_tokens=False)["input_ids"]
        rows.append((prompt, tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        for prompt, ans in rows[:4]:
            ids = torch.tensor([prompt + ans])
            labels = torch.tensor([[-100] * len(prompt) + ans])
            model(input_ids=ids, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval().save_pretrained(out)
    return out
