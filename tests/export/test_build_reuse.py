"""What one export run shares between its presets: the builder's imports (a forking worker on Linux,
a plain subprocess elsewhere) and the smoothed / GPTQ-rounded copies (CalibratedCopies)."""

import hashlib

import pytest

import edgestill.export.calibrated as calibrated_module
import edgestill.export.onnx_build as onnx_build
from edgestill.export.calibrated import CalibratedCopies, calibrated_sources
from edgestill.export.quantize import preset

IDS = [[1, 17, 300, 41, 5, 990, 12, 7, 64], [1, 33, 4, 2000, 81, 6, 15, 9], [1, 8, 9, 700, 3, 45, 2, 11, 19]]


def _digests(folder):
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir()) if f.is_file()}


def test_worker_and_subprocess_builds_are_byte_identical(tiny_llama_dir, tmp_path, monkeypatch):
    """The worker's forked builder writes the same files as `python -m onnxruntime_genai.models.builder`;
    a failing build reports its exit code and log, and the worker serves the next one."""
    chosen = preset("int4")
    onnx_build.build_onnx(tiny_llama_dir, tmp_path / "forked", chosen, tmp_path / "forked.log")
    assert onnx_build._worker is not None and onnx_build._worker.poll() is None  # the worker is up
    monkeypatch.setattr(onnx_build, "USE_WORKER", False)
    onnx_build.build_onnx(tiny_llama_dir, tmp_path / "plain", chosen, tmp_path / "plain.log")
    forked = _digests(tmp_path / "forked")
    assert "model.onnx.data" in forked and forked == _digests(tmp_path / "plain")
    monkeypatch.undo()
    with pytest.raises(RuntimeError, match=r"builder failed \(exit [1-9].*forked-bad.log"):
        onnx_build.build_onnx(tmp_path / "no-such-model", tmp_path / "bad", chosen, tmp_path / "forked-bad.log")
    onnx_build.build_onnx(tiny_llama_dir, tmp_path / "after", chosen, tmp_path / "after.log")
    assert _digests(tmp_path / "after") == forked


def _count_calls(monkeypatch):
    calls = {"smooth": 0, "gptq": []}
    smooth, gptq = calibrated_module.smooth_checkpoint, calibrated_module.gptq_checkpoint

    def counted_smooth(*a, **kw):
        calls["smooth"] += 1
        return smooth(*a, **kw)

    def counted_gptq(model_dir, out_dir, ids, settings):
        calls["gptq"].append(settings.bits)
        return gptq(model_dir, out_dir, ids, settings)

    monkeypatch.setattr(calibrated_module, "smooth_checkpoint", counted_smooth)
    monkeypatch.setattr(calibrated_module, "gptq_checkpoint", counted_gptq)
    return calls


def test_presets_of_one_run_share_copies_only_where_they_would_be_the_same(tiny_llama_dir, tmp_path, monkeypatch):
    """int8 and int4-gptq smooth once, round once per bit width; the same int4-gptq again reuses its
    copy and records; other calibration text makes new copies. A shared copy equals a fresh one."""
    calls = _count_calls(monkeypatch)
    copies = CalibratedCopies(tmp_path / "shared")
    s8, r8, rec8 = calibrated_sources(tiny_llama_dir, tmp_path / "w1", preset("int8"), IDS, copies)
    s4, r4, rec4 = calibrated_sources(tiny_llama_dir, tmp_path / "w2", preset("int4-gptq"), IDS, copies)
    again = calibrated_sources(tiny_llama_dir, tmp_path / "w3", preset("int4-gptq"), IDS, copies)
    assert calls == {"smooth": 1, "gptq": [8, 4]}
    assert s8 == s4 and r8 != r4 and again == (s4, r4, rec4)
    assert rec8["activation_smoothing_calibration"] == rec4["activation_smoothing_calibration"]
    assert rec8["gptq_calibration"]["bits"] == 8 and rec4["gptq_calibration"]["bits"] == 4
    assert not (tmp_path / "w1").exists()  # with `copies`, nothing is written to the work folder

    calibrated_sources(tiny_llama_dir, tmp_path / "w4", preset("int4-gptq"), IDS[:2], copies)
    assert calls == {"smooth": 2, "gptq": [8, 4, 4]}

    _, fresh, _ = calibrated_sources(tiny_llama_dir, tmp_path / "alone", preset("int4-gptq"), IDS)
    assert fresh.parent == tmp_path / "alone"
    assert _digests(fresh)["model.safetensors"] == _digests(r4)["model.safetensors"]
