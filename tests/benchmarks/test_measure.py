"""The measurement record of a real (tiny) bundle: every field present, with sane types and values.

Never asserts speed: only that timings are positive numbers.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from edgestill.benchmarks.measure import measure_in_subprocess, percentile, prompt_ids
from edgestill.errors import UserError

NUMBERS = ("load_s", "ttft_ms_p50", "ttft_ms_p90", "decode_ms_p50", "decode_ms_p90", "decode_tok_s_p50",
           "peak_rss_mb")


@pytest.fixture(scope="module")
def record(tiny_build):
    return measure_in_subprocess(tiny_build / "bundle-int8", threads=1, prompt_tokens=24, gen_tokens=5,
                                 repetitions=3)


def test_record_timings_are_positive_numbers(record):
    for key in NUMBERS:
        assert isinstance(record[key], float) and record[key] > 0, key
    assert record["ttft_ms_p90"] >= record["ttft_ms_p50"]
    assert record["decode_ms_p90"] >= record["decode_ms_p50"]


def test_record_echoes_settings_and_manifest(record, tiny_build):
    manifest_path = tiny_build / "bundle-int8" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    assert record["schema"] == "edgestill-bench-record" and record["schema_version"] == 1
    assert (record["threads"], record["prompt_tokens"], record["gen_tokens"], record["repetitions"]) == (1, 24, 5, 3)
    assert record["name"] == "tiny-int8" and record["role"] == "student" and record["precision"] == "int8"
    assert record["params"] == manifest["params"] > 0
    assert record["quantization"] == manifest["quantization"]
    assert record["bundle_sha256"] == hashlib.sha256(manifest_path.read_bytes()).hexdigest()


def test_file_bytes_is_the_bundle_size(record, tiny_build):
    folder = tiny_build / "bundle-int8"
    on_disk = sum(p.stat().st_size for p in folder.iterdir() if p.is_file() and p.name != "manifest.json")
    assert record["file_bytes"] == on_disk


def test_prompt_has_exactly_n_tokens(tiny_build):
    from edgestill.runtime import Bundle

    tok = Bundle.open(tiny_build / "teacher-bundle-fp32").tokenizer
    for n in (1, 16, 300):
        assert len(prompt_ids(tok, n)) == n


def test_prompt_beyond_context_is_a_user_error(tiny_build):
    with pytest.raises(UserError, match="context_length"):
        measure_in_subprocess(tiny_build / "bundle-int8", threads=1, prompt_tokens=600, gen_tokens=4,
                              repetitions=1)


def test_missing_bundle_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="edgestill export"):
        measure_in_subprocess(tmp_path / "bundle-int8", threads=1, prompt_tokens=8, gen_tokens=2, repetitions=1)


def test_percentile_interpolates():
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 90) == pytest.approx(4.6)
    assert percentile([7.0], 90) == 7.0


def test_measuring_process_stays_free_of_torch():
    """Peak RSS must be the model's, not torch's: the measure module and runtime never pull it in."""
    import subprocess
    import sys

    code = "import sys, benchmarks.measure, runtime; print('torch' in sys.modules or 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_peak_rss_is_the_measuring_process_own_not_its_parents():
    """ru_maxrss survives execve: a child of a large parent would report the parent's peak."""
    import subprocess
    import sys
    from pathlib import Path

    ballast = bytearray(400 << 20)
    ballast[::4096] = b"\1" * len(range(0, len(ballast), 4096))  # touch every page: 400 MB resident
    code = "from benchmarks.measure import peak_rss_mb; print(peak_rss_mb())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parents[2])
    assert float(done.stdout) < 200, done.stdout  # a bare Python + this module: tens of MB
    del ballast
