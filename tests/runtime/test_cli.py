"""`edgestill generate|chat` end to end in a subprocess."""

import subprocess
import sys


def run(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "edgestill.runtime", *args], input=stdin, capture_output=True, text=True)


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


def test_generate_json_and_multi_turn_chat(fp32_bundle):
    import json

    out = run("generate", str(fp32_bundle), "--prompt", "Hello there", "--max-new-tokens", "4", "--json",
              "--temperature", "0.7", "--seed", "1", "--threads", "1")
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    assert set(record) >= {"text", "tokens", "prompt_tokens", "seconds"} and 0 <= record["tokens"] <= 4
    out = run("chat", str(fp32_bundle), "--max-new-tokens", "3", "--json", "--threads", "1",
              stdin="first question\nsecond question\n/reset\nthird\n/quit\nnever read\n")
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 3  # one JSON answer per question, none after /quit


def test_bad_settings_are_one_line_exit_2(fp32_bundle):
    out = run("generate", str(fp32_bundle), "--prompt", "x", "--top-p", "0", "--no-verify")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "top_p=0.0" in out.stderr
    out = run("generate", str(fp32_bundle), "--prompt", "   ", "--no-verify")
    assert out.returncode == 2 and "empty" in out.stderr
