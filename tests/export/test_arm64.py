"""export.arm64: bundles run on emulated ARM64 cores (qemu-user) and are scored like export's figures.

The emulated tests need the sysroot (`python -m edgestill.export.arm64_sysroot`, made by `make test`'s setup
from Debian's mirror and PyPI); without it they skip and say so.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile

import pytest

from edgestill.errors import UserError
from edgestill.export.arm64_sysroot import CPUS, Sysroot, cpuinfo, deb_data, find

needs_sysroot = pytest.mark.skipif(find() is None, reason="no ARM64 sysroot: run `python -m edgestill.export.arm64_sysroot`")


def test_cpuinfo_names_the_core_and_only_its_features():
    a72, a76 = cpuinfo("cortex-a72"), cpuinfo("cortex-a76")
    assert a72.count("processor\t:") == 2 and "CPU part\t: 0xd08" in a72 and "asimddp" not in a72
    assert "CPU part\t: 0xd0b" in a76 and " asimddp" in a76 and " fphp" in a76


def test_unknown_core_is_refused_with_the_choices(tmp_path):
    with pytest.raises(UserError, match=r"--cpu cortex-x9.*cortex-a76"):
        Sysroot(tmp_path).command("cortex-x9")


def _ar(members: dict[str, bytes]) -> bytes:
    out = b"!<arch>\n"
    for name, body in members.items():
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(body):<10}`\n".encode() + body
        out += b"\n" if len(body) % 2 else b""
    return out


def test_deb_data_finds_the_data_member_after_odd_sized_ones():
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w:xz") as tar:
        info = tarfile.TarInfo("./usr/bin/hello")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    deb = _ar({"debian-binary": b"2.0\n", "control.tar.xz": b"odd", "data.tar.xz": payload.getvalue()})
    with deb_data(deb) as tar:
        assert tar.extractfile("./usr/bin/hello").read() == b"hello"
    with pytest.raises(ValueError, match="not a .deb"):
        deb_data(b"PK\x03\x04")


@pytest.fixture
def tiny_build(tmp_path, tiny_llama_dir, fp32_bundle, int8_bundle):
    """build/tiny/ with a student, held-out teacher text and its fp32 and int8 bundles."""
    from tests.export.test_export import _tiny_build, _tiny_recipe

    build = _tiny_build(tmp_path, tiny_llama_dir)
    for bundle in (fp32_bundle, int8_bundle):
        shutil.copytree(bundle, build / bundle.name)
    return _tiny_recipe(tmp_path), build


def test_missing_bundle_says_to_export_first(tiny_build):
    from edgestill.export.arm64 import main

    recipe, build = tiny_build
    with pytest.raises(UserError, match=r"bundle-int4.*edgestill export"):
        main([str(recipe), "--build-root", str(build.parent), "--precisions", "int4"])


@needs_sysroot
@pytest.mark.slow
def test_bundles_on_emulated_cores_match_this_machine(tiny_build, capsys):
    """fp32 on ARM64's kernels reproduces x86 within export's fp32 tolerance; every row is scored."""
    from edgestill.export.arm64 import HOST, main
    from edgestill.export.validate import FP32_LOGIT_TOLERANCE

    recipe, build = tiny_build
    code = main([str(recipe), "--build-root", str(build.parent), "--precisions", "fp32", "int8",
                 "--cpu", "cortex-a76", "cortex-a72"])
    report = json.loads((build / "arm64" / "arm64_check.json").read_text())
    rows = {(r["bundle"], r["cpu"]): r for r in report["rows"]}
    assert set(rows) == {(b, c) for b in ("bundle-fp32", "bundle-int8") for c in (HOST, "cortex-a76", "cortex-a72")}
    assert all("error" not in r for r in rows.values()), [r.get("error") for r in rows.values()]
    for cpu in ("cortex-a76", "cortex-a72"):
        fp32 = rows["bundle-fp32", cpu]
        assert fp32["max_abs_logit_diff_vs_x86"] <= FP32_LOGIT_TOLERANCE
        assert fp32["greedy_identical_vs_x86"] == fp32["greedy_prompts"] == 2
        assert fp32["top1_agreement_vs_fp32"] >= 0.99 and fp32["passed"]
        int8 = rows["bundle-int8", cpu]
        assert 0 < int8["top1_agreement_vs_x86"] <= 1 and int8["quality_positions"] == fp32["quality_positions"]
    assert code == (0 if all(r["passed"] for r in rows.values()) else 1)
    table = (build / "arm64" / "arm64_check.md").read_text()
    assert table.count("| bundle-int8 |") == 3 and "cortex-a72" in capsys.readouterr().out


@needs_sysroot
@pytest.mark.slow
def test_a_crash_on_a_core_becomes_an_error_row(tiny_build, monkeypatch):
    """A core whose run dies (here: a worker that aborts) gets an error row; the others still run."""
    import export.arm64 as arm64

    recipe, build = tiny_build
    broken = build / "broken_worker.py"
    broken.write_text("import os\nos.abort()\n")
    monkeypatch.setattr(arm64, "WORKER", broken)
    assert arm64.main([str(recipe), "--build-root", str(build.parent), "--precisions", "fp32",
                       "--cpu", "cortex-a53"]) == 1
    row = json.loads((build / "arm64" / "arm64_check.json").read_text())["rows"][-1]
    assert row["cpu"] == "cortex-a53" and not row["passed"] and "SIGABRT" in row["error"]


def test_every_core_has_a_device_description():
    from edgestill.export.arm64_sysroot import DEVICES

    assert set(DEVICES) == set(CPUS)


def test_rows_become_valid_benchmark_records_and_print_as_one_table(fp32_bundle):
    from edgestill.benchmarks.record import problems
    from edgestill.export.arm64 import HOST, markdown, record
    from edgestill.machine import machine_info

    base = {"bundle": fp32_bundle.name, "precision": "fp32", "floor": 0.9, "prompt_tokens": 12}
    ok = {**base, "cpu": HOST, "device": "this machine, natively", "top1_agreement_vs_fp32": 1.0,
          "perplexity_teacher_text": 3.21, "passed": True}
    failed = {**base, "cpu": "cortex-a53", "device": "Raspberry Pi 3", "passed": False, "error": "cortex-a53: SIGILL | x"}
    recs = [record(r, fp32_bundle, machine_info(), 2) for r in (ok, failed)]
    assert [problems(r) for r in recs] == [[], []]
    assert [r["target"] for r in recs] == ["local", "qemu://cortex-a53"] and recs[1]["status"] == "error"
    assert recs[0]["quality"] == {"top1_agreement_vs_fp32": 1.0, "perplexity_teacher_text": 3.21, "passed": True}
    text = markdown([ok, failed], "host")
    assert f"| {fp32_bundle.name} | {HOST} | 1.0000 | 0.9 | ok | - | - | - | 3.210 |" in text
    assert "| **error** | - | - | - | cortex-a53: SIGILL \\| x |" in text
