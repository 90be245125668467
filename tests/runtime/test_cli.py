"""`python -m runtime generate|chat` end to end in a subprocess."""

import subprocess
import sys


def run(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "runtime", *args], input=stdin, capture_output=True, text=True)


def test_generate_and_chat(fp32_bundle):
    out = run("generate", str(fp32_bundle), "--prompt", "Hello there", "--max-new-tokens", "5", "--threads", "1")
    assert out.returncode == 0, out.stderr
    out = run("chat", str(fp32_bundle), "--max-new-tokens", "3", stdin="first line\n\nsecond line\n")
    assert out.returncode == 0 and out.stdout.endswith("\n"), out  # the random model answers "\n"s


def test_bad_bundle_is_one_line_exit_2(tmp_path):
    out = run("generate", str(tmp_path), "--prompt", "x")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "no manifest.json" in out.stderr
    out = run("generate", str(tmp_path))
    assert out.returncode == 2 and "--prompt" in out.stderr
