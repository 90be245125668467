"""Every error the runtime raises on purpose: one base class, one subclass per kind of mistake.

    from edgestill.runtime import RuntimeFailure, BundleError, PromptError
    try:
        gen = Generator(Bundle.open(path))
    except BundleError as err:       # damaged / missing / foreign bundle: re-export or re-download it
        show(err)

All derive from `RuntimeFailure`, itself a `edgestill.errors.UserError` (so the CLIs print one
line and exit 2) and a `ValueError` where the caller passed a bad value. An app that embeds the
runtime catches `RuntimeFailure` and never sees a crash from bad input; anything else is a bug.
"""

from __future__ import annotations

from edgestill.errors import UserError


class RuntimeFailure(UserError):
    """Base of every error the runtime raises on purpose; the message says what is wrong and what to do."""


# ---------------------------------------------------------------- the bundle on disk

class BundleError(RuntimeFailure):
    """A bundle that cannot be used as is (the message names the folder, the file and what to do)."""


class ManifestError(BundleError):
    """manifest.json is missing, not JSON, or lacks a field the runtime needs."""


class FormatVersionError(ManifestError):
    """manifest.json is of another format or a format version this runtime does not read."""


class MissingFileError(BundleError):
    """A file listed in the manifest (or one the runtime needs) is not in the folder."""


class ChecksumError(BundleError):
    """A file's size or sha256 differs from manifest.json: damaged, truncated or from another export."""


class ModelLoadError(BundleError):
    """onnxruntime could not load model.onnx (truncated, damaged, or an unsupported graph)."""


class TokenizerError(BundleError):
    """tokenizer.json (or the chat template) is missing or cannot be read."""


# ---------------------------------------------------------------- what the caller passes

class InputError(RuntimeFailure, ValueError):
    """A bad argument to `Generator` (prompt, messages or generation settings)."""


class PromptError(InputError):
    """An empty prompt, or messages that are not a list of {"role": str, "content": str}."""


class EncodingError(InputError):
    """Text that is not valid Unicode (lone surrogates) or bytes that are not valid UTF-8."""


class ContextLengthError(InputError):
    """Prompt + max_new_tokens does not fit the model's context (and truncation was not asked for)."""


class SamplingError(InputError):
    """A sampling or length setting out of range (temperature, top_k, top_p, repetition_penalty, ...)."""
