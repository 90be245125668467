"""The runtime: run an exported bundle on a CPU with onnxruntime, numpy, tokenizers and jinja2 only.

    from edgestill.runtime import Bundle, Generator
    gen = Generator(Bundle.open("build/default/bundle-int8"), threads=2)
    print(gen.generate("The council voted ...", max_new_tokens=48))
    gen.choose("Arrived broken.", ["positive", "negative"]).text    # a label task: one of the choices
    gen.extract("Lunch at Mo's, Friday noon", ["day", "time", "place"])  # a fields task: that JSON object

Command line: `edgestill generate BUNDLE --prompt "..."` and `edgestill chat BUNDLE`.
This package never imports torch, transformers, optimum or datasets (a contract test checks it),
so an app can embed it with a few small dependencies. Every deliberate error is a
`RuntimeFailure` (runtime/errors.py).
"""

from edgestill.runtime.bundle import Bundle
from edgestill.runtime.choices import Choice
from edgestill.runtime.errors import (
                            BundleError,
                            ChecksumError,
                            ContextLengthError,
                            EncodingError,
                            FormatVersionError,
                            InputError,
                            ManifestError,
                            MissingFileError,
                            ModelLoadError,
                            PromptError,
                            RuntimeFailure,
                            SamplingError,
                            TokenizerError,
)
from edgestill.runtime.generator import Generator
from edgestill.runtime.sampling import Sampling

__all__ = ["Bundle", "Choice", "Generator", "Sampling", "RuntimeFailure", "BundleError", "ManifestError",
           "FormatVersionError", "MissingFileError", "ChecksumError", "ModelLoadError", "TokenizerError",
           "InputError", "PromptError", "EncodingError", "ContextLengthError", "SamplingError"]
