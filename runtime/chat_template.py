"""Render a bundle's chat template the way transformers' `apply_chat_template` does, with jinja2 only.

    from edgestill.runtime.chat_template import render_chat
    text = render_chat(bundle.chat_template, [{"role": "user", "content": "Hi"}], bundle.special_tokens)

Same settings as transformers 5 (checked against it by tests/runtime/test_chat.py): a sandboxed,
immutable jinja2 environment with `trim_blocks`, `lstrip_blocks` and the `loopcontrols` extension;
a `tojson` filter that does not escape HTML (`json.dumps`, ensure_ascii off); the globals
`raise_exception`, `strftime_now`, `dict` and `namespace`; the variables `messages`, `tools`,
`documents`, `add_generation_prompt` and the named special tokens (`bos_token`, `eos_token`, ...).
The `{% generation %}` tag (training masks only) renders its body unchanged.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from edgestill.runtime.errors import PromptError, TokenizerError


class _GenerationTag(jinja2.ext.Extension):
    """Accept `{% generation %}...{% endgeneration %}` (used by templates for training masks)."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller):
        return caller()


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


class _SafeNamespace(jinja2.utils.Namespace):
    """jinja2's namespace, refusing underscore names (no reach into Python internals)."""

    def __init__(*args, **kwargs):
        self, values = args[0], dict(*args[1:], **kwargs)
        for name in values:
            _SafeNamespace._check(name)
        jinja2.utils.Namespace.__init__(self, values)

    def __setitem__(self, name, value):
        _SafeNamespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name):
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"chat templates may not set {name!r} on a namespace")


class _DictMaker:
    """`dict(...)` and `dict.fromkeys(...)` inside templates, without exposing the type itself."""

    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


@lru_cache(maxsize=8)
def compile_template(source: str) -> jinja2.Template:
    """The compiled template (cached by source text); raise TokenizerError on a syntax error."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[_GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals.update(raise_exception=_raise_exception, dict=_DictMaker(), namespace=_SafeNamespace,
                       strftime_now=lambda fmt: datetime.now().strftime(fmt))
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as err:
        raise TokenizerError(f"the bundle's chat template does not parse ({err}); re-export the bundle") from None


def check_messages(messages) -> list[dict]:
    """Copies of `messages` after checking each is a dict with a str `role` and `content`."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise PromptError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) \
                or not isinstance(message.get("content"), str):
            raise PromptError(f"messages[{i}] must be a dict with str 'role' and 'content', got {message!r:.80}")
        out.append(dict(message))
    return out


def render_chat(source: str | None, messages: list[dict], special_tokens: dict[str, str],
                add_generation_prompt: bool = True, tools: list[dict] | None = None,
                documents: list[dict] | None = None, **extra) -> str:
    """The prompt text for `messages` (what `tokenizer.apply_chat_template(..., tokenize=False)` gives)."""
    if not source:
        raise TokenizerError("this bundle has no chat template (chat_template.jinja or tokenizer_config.json); "
                             "use generate()/stream() with a plain prompt, or re-export from a chat model")
    template = compile_template(source)
    try:
        return template.render(messages=check_messages(messages), tools=tools, documents=documents,
                               add_generation_prompt=add_generation_prompt, **{**special_tokens, **extra})
    except jinja2.TemplateError as err:
        raise PromptError(f"the chat template refused these messages: {err}") from None
