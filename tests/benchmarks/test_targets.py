"""Targets against the real thing: an OpenSSH server on 127.0.0.1 (the "board" is this machine), adb
without a phone, a bundle that fails to load. Bad input gives error rows with one clear line, a
non-zero exit, and every other row still written."""

from __future__ import annotations

import getpass
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


@pytest.fixture
def sshd(tmp_path_factory):
    """A fresh server per test, each with a board home of its own (no venv an earlier run left there)."""
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


def records_of(build: Path, report: str = "report") -> list[dict]:
    return [json.loads(line) for line in (build / report / "records.jsonl").read_text().splitlines()]


def cached_venv(home: Path) -> Path:
    """A working ~/.cache/edgestill-bench/venv in the board's home: a real venv (its own bin/python)
    that sees this interpreter's packages through a .pth file, as a venv an earlier run made would."""
    venv = home / ".cache" / "edgestill-bench" / "venv"
    assert os.system(f"{sys.executable} -m venv --without-pip {venv}") == 0
    site = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    ours = subprocess.run([sys.executable, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "edgestill-test.pth").write_text(ours + "\n")
    return venv / "bin" / "python"


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
    report = f"report-ssh-{getpass.getuser()}-127-0-0-1-{sshd.port}_ssh-root-127-0-0-1-{dead.rsplit(':', 1)[1]}"
    ok, bad = records_of(build_copy, report)
    assert ok["status"] == "ok" and ok["target"] == sshd.target and ok["bundle"] == str(build_copy / "bundle-int8")
    assert ok["decode_tok_s_p50"] > 0 and ok["machine"]["python"]
    assert bad["status"] == "error" and bad["target"] == dead and "Connection refused" in bad["error"]
    assert not problems(ok) and not problems(bad)
    assert "cannot log in" in (build_copy / report / "report.md").read_text()
    assert not (build_copy / "report").exists()  # no local measurement: the local report is not touched
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
@pytest.mark.parametrize("cached", [False, True], ids=["no-venv-on-board", "cached-venv-on-board"])
def test_ssh_named_python_without_onnxruntime_is_used_as_given(sshd, tiny_build, tmp_path, cached):
    """bench.remote_python lacks onnxruntime: an error row, even when a working cached venv is on the board."""
    if cached:
        cached_venv(sshd.home)
    bare = tmp_path / "bare-venv"
    assert os.system(f"{sys.executable} -m venv --without-pip {bare}") == 0
    bench = ssh_bench(sshd, remote_python=str(bare / "bin" / "python"), remote_install=False)
    (rec,) = run_ssh(sshd.target, [bundle_model(tiny_build / "bundle-int8")], POINT, bench)
    assert rec["status"] == "error" and "cannot import onnxruntime" in rec["error"]
    assert f"bench.remote_python {bare / 'bin' / 'python'}" in rec["error"]


@needs_sshd
def test_ssh_without_a_named_python_takes_the_cached_venv_and_says_so(sshd, tiny_build):
    board_python3 = subprocess.run(["ssh", "-i", str(sshd.key), *[a for o in sshd.options for a in ("-o", o)],
                                    "-p", str(sshd.port), f"{getpass.getuser()}@127.0.0.1",
                                    "python3 -c 'import onnxruntime, numpy, tokenizers, jinja2'"], capture_output=True)
    if board_python3.returncode == 0:
        pytest.skip("the board's python3 imports onnxruntime itself, so the cached venv is not needed")
    venv_python = cached_venv(sshd.home)
    (rec,) = run_ssh(sshd.target, [bundle_model(tiny_build / "bundle-int8")], POINT, ssh_bench(sshd, remote_install=False))
    assert rec["status"] == "ok", rec["error"]
    assert rec["machine"]["executable"] == str(venv_python)


@needs_sshd
@pytest.mark.parametrize("with_user", [False, True], ids=["ssh://alias", "ssh://user@alias"])
def test_ssh_alias_from_the_ssh_config_keeps_its_port(sshd, tiny_build, tmp_path, with_user):
    """`Host edgebox` with HostName, a non-default Port, User and IdentityFile: no port in the URL, so
    the config's Port applies (a `-p 22` would be refused); without a user, the config's User."""
    config = sshd.config_for("edgebox", tmp_path / "ssh_config")
    target = f"ssh://{getpass.getuser()}@edgebox" if with_user else "ssh://edgebox"
    bench = Bench(ssh_config=str(config), repetitions=1, warmup=0, remote_python=sys.executable)
    (rec,) = run_ssh(target, [bundle_model(tiny_build / "bundle-int8")], POINT, bench)
    assert rec["status"] == "ok", rec["error"]
    assert rec["target"] == target and rec["decode_tok_s_p50"] > 0 and rec["machine"]["executable"] == sys.executable


@needs_sshd
def test_board_run_keeps_the_local_report_and_names_each_device(sshd, build_copy, tmp_path):
    """A local run, then a board run: report/ stays byte for byte; the board's report names the device
    measured (from its records) and the harness separately."""
    recipe = write_recipe(tmp_path, quality_examples=0, repetitions=1, warmup=0, ssh_key=str(sshd.key),
                          ssh_options=sshd.options, remote_python=sys.executable)
    build_args = [str(recipe), "--build-root", str(build_copy.parent), "--bundles", str(build_copy / "bundle-int8")]
    assert main([*build_args, "--target", "local"]) == 0
    local = {p.name: p.read_bytes() for p in (build_copy / "report").iterdir()}
    assert main([*build_args, "--target", sshd.target]) == 0
    assert {p.name: p.read_bytes() for p in (build_copy / "report").iterdir()} == local
    (board_report,) = build_copy.glob("report-ssh-*")
    text = (board_report / "report.md").read_text()
    assert f"- `{sshd.target}`: " in text and f"({sys.executable})" in text and "**Harness**" in text
    assert "**Machine:**" in (build_copy / "report" / "report.md").read_text()
    report = json.loads((board_report / "report.json").read_text())
    assert list(report["devices"]) == [sshd.target] and report["devices"][sshd.target]["cpu"]


@needs_sshd
def test_ssh_config_mistakes_are_one_line_each_and_the_good_board_still_measured(sshd, build_copy, tmp_path, capsys):
    """An alias neither the config nor DNS knows, an alias whose IdentityFile is missing, a failing
    ProxyJump: an error row each with what to fix, exit 1, the good alias measured and the report written."""
    config = sshd.config_for("edgebox", tmp_path / "ssh_config")
    text = config.read_text()
    text += sshd.config_for("nokey", tmp_path / "x", IdentityFile=str(tmp_path / "missing_key")).read_text()
    jump_port = free_port()
    text += sshd.config_for("jumpy", tmp_path / "y", ProxyJump=f"127.0.0.1:{jump_port}").read_text()
    config.write_text(text)
    recipe = write_recipe(tmp_path, quality_examples=0, repetitions=1, warmup=0, ssh_config=str(config),
                          remote_python=sys.executable)
    targets = ["ssh://edgebox", "ssh://no-such-board.invalid", "ssh://nokey", "ssh://jumpy"]
    code = main([str(recipe), "--build-root", str(build_copy.parent), "--bundles", str(build_copy / "bundle-int8"),
                 "--target", *targets])
    assert code == 1
    (folder,) = build_copy.glob("report-ssh-edgebox_*")
    by_target = {r["target"]: r for r in records_of(build_copy, folder.name)}
    assert by_target["ssh://edgebox"]["status"] == "ok"
    unknown, nokey, jumpy = (by_target[t]["error"] for t in targets[1:])
    assert "Could not resolve" in unknown and "Host alias" in unknown
    assert f"IdentityFile {tmp_path / 'missing_key'} does not exist" in nokey
    assert f"jump host (ProxyJump [127.0.0.1]:{jump_port})" in jumpy
    assert all("\n" not in e for e in (unknown, nokey, jumpy))
    assert "3 of 4 measurements failed" in capsys.readouterr().err


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
