"""The runtime: run an exported bundle on a CPU with onnxruntime, numpy and tokenizers only.

    from runtime import Bundle, Generator
    gen = Generator(Bundle.open("build/default/bundle-int8"), threads=2)
    print(gen.generate("The council voted ...", max_new_tokens=48))

Command line: `python -m runtime generate BUNDLE --prompt "..."` and `python -m runtime chat BUNDLE`.
This package never imports torch, transformers, optimum or datasets (a contract test checks it),
so an app can embed it with three small dependencies.
"""

from runtime.bundle import Bundle, BundleError
from runtime.generator import Generator

__all__ = ["Bundle", "BundleError", "Generator"]
