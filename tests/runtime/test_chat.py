"""Chat templates: our jinja2 rendering equals transformers' apply_chat_template, byte for byte."""

from __future__ import annotations

import pytest

from edgestill.runtime import Bundle, Generator, PromptError, TokenizerError
from edgestill.runtime.chat_template import render_chat

CONVERSATIONS = [
    [{"role": "user", "content": "Hi!"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Café “quoted” — 東京 {x}"},
     {"role": "assistant", "content": "Sure.\n\n  Indented."}, {"role": "user", "content": "  and <b>tags</b> \n"}],
]

# Exercises what transformers adds to jinja2: tojson without HTML escaping, namespace, loop
# controls, trim_blocks / lstrip_blocks, raise_exception, the special-token variables.
CUSTOM = """{{ bos_token }}
{% set ns = namespace(n=0) %}
{% for m in messages %}
    {% if m['role'] == 'system' %}{% continue %}{% endif %}
    {% set ns.n = ns.n + 1 %}
    <{{ m.role }}>{{ m.content | tojson }}</{{ m.role }}>
    {% if ns.n > 2 %}{% break %}{% endif %}
{% endfor %}
{% if messages | length > 10 %}{{ raise_exception('too long') }}{% endif %}
{% if add_generation_prompt %}<assistant>{% endif %}{{ eos_token }}"""


@pytest.fixture(scope="module")
def hf_tokenizer(tiny_llama_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama_dir)


@pytest.fixture(scope="module")
def bundle(fp32_bundle):
    return Bundle.open(fp32_bundle, verify=False)


@pytest.mark.parametrize("messages", CONVERSATIONS)
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_bundle_template_renders_like_transformers(bundle, hf_tokenizer, messages, add_generation_prompt):
    want = hf_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    got = render_chat(bundle.chat_template, messages, bundle.special_tokens, add_generation_prompt)
    assert got == want


@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_custom_template_renders_like_transformers(bundle, hf_tokenizer, messages):
    want = hf_tokenizer.apply_chat_template(messages, chat_template=CUSTOM, tokenize=False, add_generation_prompt=True)
    assert render_chat(CUSTOM, messages, bundle.special_tokens) == want
    assert '"Café “quoted” — 東京 {x}"' in want or len(messages) == 1  # tojson kept non-ASCII, no HTML escapes


def test_chat_generates_from_the_rendered_prompt(bundle, hf_tokenizer):
    gen = Generator(bundle, threads=1)
    prompt = gen.chat_prompt(CONVERSATIONS[0])
    assert prompt == hf_tokenizer.apply_chat_template(CONVERSATIONS[0], tokenize=False, add_generation_prompt=True)
    answer = gen.chat(CONVERSATIONS[0], max_new_tokens=6, temperature=1.0, seed=0, ignore_eos=True)
    assert answer == gen.generate(prompt, max_new_tokens=6, raw=True, temperature=1.0, seed=0, ignore_eos=True)
    assert "".join(gen.chat_stream(CONVERSATIONS[0], max_new_tokens=6, temperature=1.0, seed=0,
                                   ignore_eos=True)) == answer


def test_bad_messages_and_templates_are_clear_errors(bundle):
    gen = Generator(bundle, threads=1)
    for bad in ([], "hello", [{"role": "user"}], [{"role": "user", "content": 3}], [{"role": "user", "content": " "}]):
        with pytest.raises(PromptError):
            gen.chat(bad, max_new_tokens=2)
    with pytest.raises(PromptError, match="refused.*too long"):
        render_chat(CUSTOM, [{"role": "user", "content": "x"}] * 11, {})
    with pytest.raises(TokenizerError, match="does not parse"):
        render_chat("{% for %}", CONVERSATIONS[0], {})
    with pytest.raises(TokenizerError, match="no chat template"):
        render_chat(None, CONVERSATIONS[0], {})
