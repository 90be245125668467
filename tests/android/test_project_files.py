"""What CI can check of the Android project without an Android SDK: the manifest and resources
parse, the Gradle Kotlin DSL files are well formed and say what the README says (package,
minSdk 24, pinned versions), the Kotlin sources use core classes that exist, and `make android`
says what is missing and exits 2 where there is no SDK.
"""

from __future__ import annotations

import os
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "android_demo"
APP = DEMO / "app"
SRC = APP / "src/main/java/dev/edgestill/demo"
ANDROID = "{http://schemas.android.com/apk/res/android}"
TOOLS = "{http://schemas.android.com/tools}"
PACKAGE = "dev.edgestill.demo"


def strip_code(text: str) -> str:
    """Kotlin/Java text with comments and string/char literals removed, so brackets can be counted
    (one left-to-right scan: a quote inside a comment or a string does not start anything)."""
    token = re.compile(r'"""(?:.|\n)*?"""|"(?:\\.|[^"\\\n])*"|\'(?:\\[^\'\n]+|[^\'\\\n])\''
                       r"|/\*(?:.|\n)*?\*/|//[^\n]*")
    return token.sub("", text)


def balanced(text: str) -> bool:
    pairs, stack = {")": "(", "]": "[", "}": "{"}, []
    for ch in strip_code(text):
        if ch in "([{":
            stack.append(ch)
        elif ch in pairs:
            if not stack or stack.pop() != pairs[ch]:
                return False
    return not stack


def test_manifest_declares_the_launcher_activity_and_no_network():
    root = ET.parse(APP / "src/main/AndroidManifest.xml").getroot()
    [activity] = root.iter("activity")
    assert activity.get(f"{ANDROID}name") == ".MainActivity" and activity.get(f"{ANDROID}exported") == "true"
    actions = {a.get(f"{ANDROID}name") for a in activity.iter("action")}
    categories = {c.get(f"{ANDROID}name") for c in activity.iter("category")}
    assert "android.intent.action.MAIN" in actions and "android.intent.category.LAUNCHER" in categories
    permissions = {p.get(f"{ANDROID}name"): p.get(f"{TOOLS}node") for p in root.iter("uses-permission")}
    assert permissions.get("android.permission.INTERNET") == "remove"
    assert all(node == "remove" for node in permissions.values()), permissions  # asks for nothing


def test_resources_parse_and_define_the_label():
    manifest = ET.parse(APP / "src/main/AndroidManifest.xml").getroot()
    label = next(manifest.iter("application")).get(f"{ANDROID}label")
    strings = {s.get("name") for s in ET.parse(APP / "src/main/res/values/strings.xml").getroot().iter("string")}
    assert label == "@string/app_name" and "app_name" in strings


@pytest.mark.parametrize("path", sorted(p.relative_to(DEMO) for p in DEMO.rglob("*.kts")) +
                         sorted(p.relative_to(DEMO) for p in SRC.rglob("*.kt")) +
                         sorted(p.relative_to(DEMO) for p in SRC.rglob("*.java")), ids=str)
def test_kotlin_and_java_files_have_balanced_brackets(path):
    assert balanced((DEMO / path).read_text()), path


def gradle_properties() -> dict[str, str]:
    lines = (DEMO / "gradle.properties").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def test_gradle_files_say_what_the_readme_says():
    settings = (DEMO / "settings.gradle.kts").read_text()
    root = (DEMO / "build.gradle.kts").read_text()
    app = (APP / "build.gradle.kts").read_text()
    readme = (DEMO / "README.md").read_text()
    assert 'include(":app")' in settings and "google()" in settings and "mavenCentral()" in settings
    assert f'namespace = "{PACKAGE}"' in app and f'applicationId = "{PACKAGE}"' in app
    assert re.search(r"\bminSdk = 24\b", app)
    for key in ("compileSdk", "targetSdk"):
        assert re.search(rf"\b{key} = 35\b", app), key
    plugins = dict(re.findall(r'id\("([\w.]+)"\) version "([\w.-]+)"', root))
    assert plugins == {"com.android.application": "8.7.3", "org.jetbrains.kotlin.android": "2.0.21"}
    props = gradle_properties()
    for name, version in [("Android Gradle plugin", "8.7.3"), ("Kotlin", "2.0.21"),
                          ("onnxruntime-genai-android", props["edgestill.genaiVersion"]),
                          ("onnxruntime-android", props["edgestill.ortVersion"])]:
        assert re.search(rf"\| {re.escape(name)} \| {re.escape(version)}\b", readme), (name, version)
    wrapper = (DEMO / "gradle/wrapper/gradle-wrapper.properties").read_text()
    assert "gradle-8.9-bin.zip" in wrapper and "Gradle | 8.9 or newer" in readme


def test_every_dependency_version_is_pinned():
    props = gradle_properties()
    assert re.fullmatch(r"\d+\.\d+\.\d+", props["edgestill.genaiVersion"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", props["edgestill.ortVersion"])
    for path in DEMO.rglob("*.kts"):
        text = path.read_text()
        assert "latest.release" not in text and not re.search(r':[\d.]*\+"', text), path
        for coordinate in re.findall(r'implementation\("([^"]+)"\)', text):
            assert re.fullmatch(r"[\w.-]+:[\w.-]+:(\d+\.\d+\.\d+|\$\w+)", coordinate), coordinate


def test_kotlin_sources_declare_their_package_and_use_existing_core_classes():
    core = {p.stem for p in (SRC / "core").glob("*.java")}
    for path in SRC.glob("*.kt"):
        text = path.read_text()
        assert text.startswith("/*"), f"{path.name}: start with a comment saying what the file owns"
        assert re.search(rf"^package {re.escape(PACKAGE)}$", text, re.M), path.name
        for name in re.findall(r"^import dev\.edgestill\.demo\.core\.(\w+)", text, re.M):
            assert name in core, f"{path.name} imports core.{name}, which does not exist"
    for path in (SRC / "core").glob("*.java"):
        text = path.read_text()
        assert re.search(r"^package dev\.edgestill\.demo\.core;", text, re.M)
        assert not re.search(r"^import (android|androidx|ai\.onnxruntime)\.", text, re.M), \
            f"{path.name}: core must stay pure Java (it is compiled and tested without Android)"


def test_readme_documents_the_benchmark_command():
    readme = (DEMO / "README.md").read_text()
    assert f"adb shell am start -S -W -n {PACKAGE}/.MainActivity" in readme
    for extra in ("--es bundle", "--es bench_out", "--es threads", "--ei prompt_tokens", "--ei gen_tokens",
                  "--ei repetitions"):
        assert extra in readme, extra
    bench_mode = (SRC / "BenchMode.kt").read_text()
    assert 'EXTRA_OUT = "bench_out"' in bench_mode and 'EXTRA_BUNDLE = "bundle"' in bench_mode


def test_make_android_without_an_sdk_says_what_is_missing(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("ANDROID_HOME", "ANDROID_SDK_ROOT")}
    if (DEMO / "local.properties").exists():
        pytest.skip("android_demo/local.properties points at an SDK on this machine")
    proc = subprocess.run(["bash", str(DEMO / "build.sh")], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith("make android: no ")
    assert "Android SDK" in proc.stderr or "JDK" in proc.stderr
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^android:\n\tbash android_demo/build.sh$", makefile, re.M)
