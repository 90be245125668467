"""The calibrated copies of a student that one export run shares between its presets, and the QAT pass's start.

    copies = CalibratedCopies(tmp)              # one per `edgestill export` run
    smoothed, source, records = calibrated_sources(student, work, preset("int8"), ids, copies)
    report = qat_pass(student, out, data, instruction, QatSettings(bits=4), copies)

int8, int4-gptq, int4-gptq-mixed and int4-qat all start from the same activation-smoothed copy
(export/smooth.py), and the last three round it with GPTQ (export/gptq.py) the same way: each
copy is made once per run, keyed by the source weights, the calibration sequences and the
settings, so it is only reused where it would come out the same. This module is the top of the
transform layer: it chains smooth -> gptq -> qat, which never import each other.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

from edgestill.errors import UserError
from edgestill.export.calibration import calibration_ids
from edgestill.export.gptq import GptqSettings, gptq_checkpoint
from edgestill.export.inputs import source_fingerprint
from edgestill.export.qat import QatSettings, qat_student
from edgestill.export.quantize import Preset, gptq_preset
from edgestill.export.smooth import smooth_checkpoint


class CalibratedCopies:
    """The smoothed and GPTQ-rounded copies of students made during one export run, kept under
    `root` and shared by the run's presets: int8, int4-gptq, int4-gptq-mixed and int4-qat's pass all
    start from the same smoothed copy, and the last three round it the same way. Keyed by the source weights, the
    calibration sequences and the settings, so a copy is only reused where it would come out the
    same."""

    def __init__(self, root: Path):
        self.root, self._made = Path(root), {}

    def get(self, key: tuple, make) -> tuple[Path, object]:
        """(folder, record) for `key`: `make(folder)` writes the folder and returns its record."""
        if key not in self._made:
            folder = self.root / f"copy-{len(self._made)}"
            self._made[key] = (folder, make(folder))
        return self._made[key]


def calibrated_sources(model_dir: Path, work: Path, chosen: Preset, ids: list[list[int]],
                       copies: CalibratedCopies | None = None) -> tuple[Path, Path, dict]:
    """For a smoothed and/or GPTQ preset, copies of `model_dir` under `work` (or taken from
    `copies`), calibrated on the token sequences `ids`: (the smoothed copy, else `model_dir`; the
    copy to build from: its GPTQ rounding, else the former; the manifest's quantization entries)."""
    copies = copies or CalibratedCopies(work)
    base = (source_fingerprint(model_dir), hashlib.sha256(json.dumps(ids).encode()).hexdigest())
    records: dict = {}
    smoothed = model_dir
    if chosen.smooth:
        folder, record = copies.get(("smooth", *base), lambda out: smooth_checkpoint(model_dir, out, ids))
        if record is None:
            records["activation_smoothing"] = "none (architecture without Llama-style projections)"
        else:
            records["activation_smoothing_calibration"] = record
            smoothed = folder
    if not chosen.gptq:
        return smoothed, smoothed, records
    settings = GptqSettings(chosen.bits, chosen.block)
    folder, record = copies.get(("gptq", *base, chosen.smooth, settings),
                                lambda out: gptq_checkpoint(smoothed, out, ids, settings))
    records["gptq_calibration"] = {k: v for k, v in record.items() if k != "relative_output_error"}
    records["gptq_relative_output_error"] = record["relative_output_error"]
    return smoothed, folder, records


def qat_start(student_dir: Path, work: Path, data: Path, instruction: str, s: QatSettings,
              copies: CalibratedCopies | None = None) -> tuple[Path, str | dict]:
    """(the checkpoint the QAT pass trains from, what it is). `s.start` "gptq": GPTQ's rounding
    of the smoothed student, made in `work` or taken from `copies`; "weights": the student's own
    weights, smoothed first when `s.smooth`."""
    ids = calibration_ids(student_dir, data, instruction, [])
    if s.start == "gptq":
        _, rounded, records = calibrated_sources(student_dir, work, gptq_preset(s.bits, s.block), ids, copies)
        return rounded, {k: v for k, v in records["gptq_calibration"].items() if k != "rtn_kept_for"}
    if s.start != "weights":
        raise UserError(f"QAT start {s.start!r}: use 'gptq' or 'weights'")
    if s.smooth and smooth_checkpoint(student_dir, work / "smoothed", ids) is not None:
        return work / "smoothed", "the student's weights, smoothed"
    return student_dir, "the student's weights"


def qat_pass(student_dir: Path, out_dir: Path, data: Path, instruction: str, s: QatSettings,
             copies: CalibratedCopies | None = None) -> dict:
    """The QAT pass on `student_dir` from the start `s.start` names, written to `out_dir`;
    returns qat_report.json."""
    student_dir, out_dir = Path(student_dir), Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.start-") as work:
        start_dir, start = qat_start(student_dir, Path(work), data, instruction, s, copies)
        return qat_student(student_dir, start_dir, start, out_dir, data, instruction, s)
