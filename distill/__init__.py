"""Distill: recipe -> teacher-written inputs and answers -> trained student (`edgestill distill RECIPE`).

`build/<name>/data/` (inputs, the teacher's answers and top-k log-probs) and `build/<name>/student/`
(a Hugging Face checkpoint + distill_report.json); distill/README.md lists the modules.
"""
