"""Targets against the real thing: an OpenSSH server on 127.0.0.1 (the "board" is this machine), adb
without a phone, a bundle that fails to load. Bad input gives error rows with one clear line, a
non-zero exit, and every other row still written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgestill.benchmarks.__main__ import main
from edgestill.benchmarks.plan import Point, bundle_model
from edgestill.benchmarks.record import problems
from edgestill.benchmarks.target_adb import run_adb
from edgestill.benchmarks.target_ssh import run_ssh
from edgestill.recipe import Bench
from tests.benchmarks.conftest import write_recipe
from tests.benchmarks.sshd import SSHD, free_port, start_sshd

needs_sshd = pytest.mark.skipif(not Path(SSHD).is_file() or os.geteuid() != 0,
                                reason="needs Debian's openssh-server (apt-get install openssh-server) and root")
POINT = [Point(1, 8, 3)]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


def records_of(build: Path) -> list[dict]:
    return [json.loads(line) for line in (build / "report" / "records.jsonl").read_text().splitlines()]


def ssh_bench(sshd, **kw) -> Bench:
    return Bench(ssh_key=str(sshd.key), ssh_options=sshd.options, repetitions=1, warmup=0, **kw)


@needs_sshd
def test_ssh_board_and_an_unreachable_one_in_one_run(sshd, build_copy, tmp_path, capsys):
    """The good board gives a measured row; the dead port an error row; the run exits 1 with both written."""
    dead = f"ssh://root@127.0.0.1:{free_port()}"
    recipe = write_recipe(tmp_path, quality_examples=0, repetitions=1, warmup=0, ssh_key=str(sshd.key),
                          ssh_options=sshd.options, remote_python=sys.executable)
    code = main([str(recipe), "--build-root", str(build_copy.parent), "--bundles", str(build_copy / "bundle-int8"),
                 "--target", sshd.target, dead])
    assert code == 1
    ok, bad = records_of(build_copy)
    assert ok["status"] == "ok" and ok["target"] == sshd.target and ok["bundle"] == str(build_copy / "bundle-int8")
    assert ok["decode_tok_s_p50"] > 0 and ok["machine"]["python"]
    assert bad["status"] == "error" and bad["target"] == dead and "Connection refused" in bad["error"]
    assert not problems(ok) and not problems(bad)
    assert "cannot log in" in (build_copy / "report" / "report.md").read_text()
    assert "1 of 2 measurements failed" in capsys.readouterr().err
    assert not list(Path("/tmp").glob("edgestill-bench.*/bundles/bundle-int8"))  # cleaned up on the board


@needs_sshd
def test_ssh_wrong_key_is_one_clear_line(sshd, tiny_build, tmp_path):
    other = tmp_path / "other_key"
    os.system(f"ssh-keygen -q -t ed25519 -N '' -f {other}")
    bench = Bench(ssh_key=str(other), ssh_options=sshd.options)
    (rec,) = run_ssh(sshd.target, [bundle_model(tiny_build / "bundle-int8")], POINT, bench)
    assert rec["status"] == "error" and "Permission denied" in rec["error"] and "bench.ssh_key" in rec["error"]


@needs_sshd
def test_ssh_board_without_onnxruntime(sshd, tiny_build, tmp_path):
    bare = tmp_path / "bare-venv"
    assert os.system(f"{sys.executable} -m venv --without-pip {bare}") == 0
    bench = ssh_bench(sshd, remote_python=str(bare / "bin" / "python"), remote_install=False)
    (rec,) = run_ssh(sshd.target, [bundle_model(tiny_build / "bundle-int8")], POINT, bench)
    assert rec["status"] == "error" and "cannot import onnxruntime" in rec["error"]


@needs_sshd
def test_ssh_board_without_python(sshd, tiny_build):
    bench = ssh_bench(sshd, remote_python="/nonexistent/python3")
    (rec,) = run_ssh(sshd.target, [bundle_model(tiny_build / "bundle-int8")], POINT, bench)
    assert rec["status"] == "error" and "no Python 3.10+" in rec["error"] and "bench.remote_python" in rec["error"]


def test_adb_without_a_phone_gives_error_rows(tiny_build):
    """No adb on PATH, or adb but no device: every row an error naming what to do."""
    models = [bundle_model(tiny_build / "bundle-int8"), bundle_model(tiny_build / "bundle-fp32")]
    try:
        records = run_adb("adb://R5CT0000000", models, POINT, Bench())
    finally:
        if shutil.which("adb"):  # stop the adb server this test started
            subprocess.run(["adb", "kill-server"], capture_output=True, timeout=30)
    assert len(records) == 2 and all(r["status"] == "error" for r in records)
    assert all(not problems(r) for r in records)
    if shutil.which("adb") is None:
        assert "adb not found on PATH" in records[0]["error"]
    else:
        assert "adb does not see device 'R5CT0000000'" in records[0]["error"]


def test_bundle_that_fails_to_load_other_rows_still_written(build_copy, tmp_path, capsys):
    model = build_copy / "bundle-fp32" / "model.onnx"
    model.write_bytes(model.read_bytes()[:-16] + b"\0" * 16)  # same size, wrong sha256
    recipe = write_recipe(tmp_path, quality_examples=1, repetitions=1, warmup=0)
    code = main([str(recipe), "--build-root", str(build_copy.parent), "--bundles", str(build_copy / "bundle-fp32"),
                 str(build_copy / "bundle-int8")])
    assert code == 1
    by_name = {r["name"]: r for r in records_of(build_copy)}
    assert by_name["tiny-fp32"]["status"] == "error" and "model.onnx" in by_name["tiny-fp32"]["error"]
    assert by_name["tiny-int8"]["status"] == "ok" and by_name["tiny-int8"]["quality"]["rouge_l_vs_teacher"] >= 0
    assert "tiny-fp32" in capsys.readouterr().err
    report = json.loads((build_copy / "report" / "report.json").read_text())
    assert [m["name"] for m in report["models"]] == ["tiny-int8"]
    assert report["errors"][0]["label"] == "tiny-fp32"


def test_bad_target_is_a_user_error(tiny_build, tmp_path):
    from edgestill.errors import UserError

    with pytest.raises(UserError, match="--target: 'ftp://x' is not a target"):
        main([str(write_recipe(tmp_path)), "--build-root", str(tiny_build.parent), "--target", "ftp://x"])


def test_a_failed_peer_warns_but_does_not_fail_the_run(build_copy, tmp_path, capsys):
    broken = tmp_path / "teacher-hf"
    broken.mkdir()
    (broken / "config.json").write_text("{}")  # an HF folder without weights
    (build_copy / "student").mkdir()
    (build_copy / "student" / "distill_report.json").write_text(json.dumps({"teacher": {"dir": str(broken)}}))
    recipe = write_recipe(tmp_path, quality_examples=0, repetitions=1, warmup=0,
                          engines=["edgestill-runtime", "transformers-eager"])
    code = main([str(recipe), "--build-root", str(build_copy.parent), "--bundles",
                 str(build_copy / "teacher-bundle-fp32")])
    assert code == 0
    ours, peer = records_of(build_copy)
    assert ours["status"] == "ok" and peer["status"] == "error" and peer["engine"] == "transformers-eager"
    assert "safetensors" in peer["error"]
    assert capsys.readouterr().err.startswith("warning: 1 of 2 measurements failed")
