"""Unit tests of the Android app's pure-Java core (android_demo/app/src/main/java/dev/edgestill/demo/core),
run on a desktop JDK through tests/android/java/Probe.java and compared with the Python harness and
runtime where both compute the same thing (percentiles, rounding, the benchmark prompt, the chat prompt).
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest

from edgestill.benchmarks.measure import PASSAGE, percentile, prompt_ids
from edgestill.recipe import Bench
from edgestill.runtime.bundle import Bundle as RuntimeBundle

from .conftest import write_bundle


def ok(result: dict):
    assert "error" not in result, result["error"]
    return result["ok"]


def test_percentile_and_round_match_the_harness(probe):
    rng = random.Random(7)
    vectors = [[5.0], [3.0, 1.0]] + [[rng.uniform(0.5, 80) for _ in range(n)] for n in (4, 31, 160)]
    cases = [(v, q) for v in vectors for q in (0, 50, 90, 100)]
    numbers = [2.675, 0.125, 1.005, 12345.6785, 0.5, 1.5, 2.5, -3.14159, 41.999999]
    results = probe([{"op": "percentile", "values": v, "q": q} for v, q in cases]
                    + [{"op": "round", "x": x, "digits": d} for x in numbers for d in (0, 1, 2, 3)])
    for (v, q), r in zip(cases, results):
        assert ok(r) == percentile(v, q)  # same float operations in the same order: exactly equal
    for (x, d), r in zip([(x, d) for x in numbers for d in (0, 1, 2, 3)], results[len(cases):]):
        assert ok(r) == round(x, d)


def test_percentile_of_nothing_is_an_error(probe):
    [r] = probe([{"op": "percentile", "values": [], "q": 50}])
    assert "no values" in r["error"]


TRICKY = ['plain', 'quote " and backslash \\ and slash /', "newline\n tab\t cr\r",
          "control \x00\x01\x1f", "unicode é ü 中文", "emoji 🤖 (surrogate pair)", "line sep \u2028 \u2029",
          "{braces} [and] <tags>", ""]


def test_json_quote_escapes_so_python_reads_the_same_string(probe):
    for s, r in zip(TRICKY, probe([{"op": "quote", "s": s} for s in TRICKY])):
        text = ok(r)
        assert json.loads(text) == s
        assert "\n" not in text and "\r" not in text and "\x00" not in text


def test_json_parse_and_write_round_trip(probe):
    docs = [{"a": [1, -2, 3.5, 1e-07, 12345678901234, None, True, False], "b": {"c": "é\n\"x\"", "d": []}},
            [{}, [], "", 0, -0.25, 6.02e23], "just a string", 3, None,
            {"\\u escaped key \u00e9": "🤖", "nested": {"deep": [[[]]]}}]
    texts = [json.dumps(d) for d in docs] + [json.dumps(d, indent=2, ensure_ascii=False) for d in docs]
    for text, r in zip(texts, probe([{"op": "parse", "text": t} for t in texts])):
        assert json.loads(ok(r)) == json.loads(text)


@pytest.mark.parametrize("bad", ['{"a": 1', '[1, 2,]', '{"a" 1}', '"unterminated', "tru", "01x", "{} extra",
                                 '{"a": "\\q"}', "", '["\\u12"]'])
def test_json_parse_rejects_malformed_text_naming_the_position(probe, bad):
    [r] = probe([{"op": "parse", "text": bad}])
    assert r.get("error", "").startswith("ParseError:"), r
    assert "at character" in r["error"]


def test_benchmark_prompt_is_the_harness_prompt(probe):
    class Tok:  # the harness's prompt_ids only calls encode(...).ids
        def encode(self, text, add_special_tokens=False):
            return type("E", (), {"ids": [len(w) * 7 + i for i, w in enumerate(text.split())]})()

    piece = Tok().encode(PASSAGE).ids
    ns = [1, 64, len(piece), len(piece) + 1, 300]
    results = probe([{"op": "passage"}] + [{"op": "prompt_ids", "piece": piece, "n": n} for n in ns]
                    + [{"op": "prompt_ids", "piece": [], "n": 4}])
    assert ok(results[0]) == PASSAGE
    for n, r in zip(ns, results[1:-1]):
        assert ok(r) == prompt_ids(Tok(), n)
    assert "encodes the benchmark passage to nothing" in results[-1]["error"]


def test_peak_rss_is_read_from_proc_status(probe):
    texts = ["Name:\tx\nVmPeak:\t 900000 kB\nVmHWM:\t  412345 kB\nVmRSS:\t 1 kB\n", "VmHWM:\t2048 kB", "Name:\tx\n",
             "VmHWM:\tlots kB"]
    got = [r.get("ok") for r in probe([{"op": "peak_rss", "text": t} for t in texts])]
    assert got == [pytest.approx(412345 / 1024), 2.0, None, None]


def test_settings_default_to_the_recipe_bench_defaults(probe):
    [r] = probe([{"op": "settings", "extras": {}}])
    [s] = ok(r)
    bench = Bench()
    assert (s["threads"], s["prompt_tokens"], s["gen_tokens"], s["repetitions"]) == \
        (bench.threads, bench.prompt_tokens, bench.gen_tokens, bench.repetitions)
    assert s["warmup"] == 1 and s["target"] == "adb://" and s["run_id"] is None


def test_settings_threads_list_gives_one_setting_each(probe):
    extras = {"threads": "1, 2,4", "prompt_tokens": 128, "gen_tokens": "16", "target": "adb://R5CT1",
              "run_id": "run-9"}
    [r] = probe([{"op": "settings", "extras": extras}])
    got = ok(r)
    assert [s["threads"] for s in got] == [1, 2, 4]
    assert all(s["prompt_tokens"] == 128 and s["gen_tokens"] == 16 and s["target"] == "adb://R5CT1"
               and s["run_id"] == "run-9" for s in got)


@pytest.mark.parametrize("extras, named", [({"threads": "0"}, "extra threads"), ({"threads": "two"}, "extra threads"),
                                           ({"gen_tokens": "-1"}, "extra gen_tokens"),
                                           ({"repetitions": "1.5"}, "extra repetitions"),
                                           ({"warmup": "-1"}, "extra warmup"),
                                           ({"target": "ssh://pi@host"}, "extra target")])
def test_bad_settings_name_the_extra(probe, extras, named):
    [r] = probe([{"op": "settings", "extras": extras}])
    assert r.get("error", "").startswith("SettingsException: " + named), r


def test_a_good_bundle_opens_with_the_manifest_figures(probe, bundle_dir):
    [r] = probe([{"op": "bundle", "dir": str(bundle_dir), "verify": True, "prompt": "The {council} voted."}])
    got = ok(r)
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert got["name"] == "default-int8"
    assert got["manifest_sha256"] == hashlib.sha256((bundle_dir / "manifest.json").read_bytes()).hexdigest()
    assert got["file_bytes"] == sum(f["bytes"] for f in manifest["files"].values())
    assert got["quality"] == {"top1_agreement_vs_fp32": 0.95, "greedy_matching_prefix_mean": 25.0}
    kv = 2 * 8 * 3 * 64 * 96 * 4
    assert got["need_bytes"] == got["file_bytes"] + kv + (96 << 20)
    runtime_view = RuntimeBundle(path=bundle_dir, manifest=manifest, tokenizer=None)
    assert got["prompt"] == runtime_view.format_prompt("The {council} voted.")


def test_chat_prompt_without_instruction_is_the_text_in_the_template(probe, tmp_path):
    d = write_bundle(tmp_path / "b", prompt={"template": "<s>{user}</s>", "instruction": ""})
    [r] = probe([{"op": "bundle", "dir": str(d), "prompt": "hi {there}"}])
    assert ok(r)["prompt"] == "<s>hi {there}</s>"


def damage(kind: str, d: Path) -> str:
    """Break bundle `d` in one way; return a phrase its error message must hold."""
    if kind == "no folder":
        return "no such folder"
    write_bundle(d)
    manifest = json.loads((d / "manifest.json").read_text())
    if kind == "no manifest":
        (d / "manifest.json").unlink()
        return "no manifest.json"
    if kind == "bad json":
        (d / "manifest.json").write_text('{"format": "edgestill-bundle", ')
        return "manifest.json is not valid JSON"
    if kind == "format version 2":
        write_bundle(d, format_version=2)
        return "version 2, this app reads 'edgestill-bundle' version 1"
    if kind == "other format":
        write_bundle(d, format="gguf")
        return "format 'gguf'"
    if kind == "no genai_config":
        (d / "genai_config.json").unlink()
        del manifest["files"]["genai_config.json"]
        (d / "manifest.json").write_text(json.dumps(manifest))
        return "genai_config.json is missing"
    if kind == "missing file":
        (d / "tokenizer.json").unlink()
        return "file tokenizer.json is missing"
    if kind == "wrong size":
        (d / "model.onnx").write_bytes(b"short")
        return "file model.onnx has 5 bytes, the manifest says"
    if kind == "wrong sha256":
        data = bytearray((d / "model.onnx").read_bytes())
        data[0] ^= 1
        (d / "model.onnx").write_bytes(bytes(data))
        return "model.onnx does not match its sha256"
    raise AssertionError(kind)


KINDS = ["no folder", "no manifest", "bad json", "format version 2", "other format", "no genai_config",
         "missing file", "wrong size", "wrong sha256"]


def test_broken_bundles_are_refused_with_a_message_that_says_what_to_do(probe, tmp_path):
    dirs = [tmp_path / k.replace(" ", "-") for k in KINDS]
    phrases = [damage(k, d) for k, d in zip(KINDS, dirs)]
    results = probe([{"op": "bundle", "dir": str(d), "verify": True} for d in dirs])
    for kind, phrase, r in zip(KINDS, phrases, results):
        msg = r.get("error", "")
        assert msg.startswith("BundleException: "), (kind, r)
        assert phrase in msg, (kind, msg)
        assert any(w in msg for w in ("re-export", "copy a bundle", "update the app")), (kind, msg)
        assert "\n" not in msg


def test_sha256_is_only_checked_when_asked(probe, tmp_path):
    d = tmp_path / "b"
    damage("wrong sha256", d)
    fast, full = probe([{"op": "bundle", "dir": str(d), "verify": False}, {"op": "bundle", "dir": str(d), "verify": True}])
    assert "ok" in fast and "sha256" in full["error"]


def test_not_enough_memory_message(probe):
    fits, short = probe([{"op": "not_enough", "need": 100 << 20, "avail": 100 << 20},
                         {"op": "not_enough", "need": 900 << 20, "avail": 300 << 20}])
    assert fits["ok"] is None
    assert "needs about 900 MiB" in short["ok"] and "300 MiB available" in short["ok"] and "int4" in short["ok"]
