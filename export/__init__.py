"""Export: Hugging Face checkpoint -> validated ONNX bundle (docs/contracts.md, "The bundle").

`edgestill export RECIPE` (export/__main__.py) exports a recipe's student at each precision and
its teacher; `export_bundle(model_dir, out_dir, precision, ExportSettings(...))` exports one
folder. Layers, bottom to top (export/README.md):

- building blocks: fakequant, calibration, checkpoint, inputs, quantize (the presets);
- transforms, one checkpoint -> checkpoint pass per file, none importing another: smooth, gptq, qat;
- ONNX: onnx_build (the builder), tie_embedding, manifest, validate, quality;
- orchestration: calibrated (copies shared by presets), build (one uniform preset), mixed,
  bundle (one bundle, atomic), passes (the gptq / qat commands), __main__ (a recipe).
"""

from edgestill.export.bundle import ExportSettings, export_bundle

__all__ = ["ExportSettings", "export_bundle"]
