"""Contract: `import edgestill.runtime` (and using it) pulls in neither torch, transformers, optimum nor datasets."""

import subprocess
import sys

CODE = """
import sys
import edgestill.runtime, edgestill.runtime.__main__
from edgestill.runtime import Bundle, BundleError, Generator
heavy = sorted(m for m in ("torch", "transformers", "optimum", "datasets") if m in sys.modules)
assert not heavy, heavy
"""


def test_runtime_does_not_import_heavy_packages():
    result = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
