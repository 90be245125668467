"""Export: Hugging Face checkpoint -> validated ONNX bundle (see docs/contracts.md, "The bundle").

`edgestill export RECIPE` exports a recipe's student at each precision and its teacher;
`export_bundle(model_dir, out_dir, precision, ...)` exports one folder (used for the teacher
directly and by tests). Modules: onnx_build (the builder call), quantize (precision presets),
manifest (manifest.json), validate (ONNX vs PyTorch), bundle (the steps, atomic).
"""

from edgestill.export.bundle import export_bundle

__all__ = ["export_bundle"]
