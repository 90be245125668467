"""The `adb://serial` target: an Android phone running the android_demo app's benchmark mode.

`adb://` alone means the only device adb sees. For each bundle:

1. `adb push` the bundle to the app's external files folder,
   `/sdcard/Android/data/<bench.adb_package>/files/bundles/<bundle folder>/` (android_demo/README.md);
2. for each point: `adb shell am start -W -S -n <package>/.MainActivity --es bundle <bundle folder>
   --es bench_out edgestill-bench-<n>.json --ei threads T --ei prompt_tokens P --ei gen_tokens G
   --ei repetitions R --ei warmup W --es target adb://SERIAL --es run_id ID --ez exit true`; the app
   measures in a fresh process (-S) and writes a JSON list of records (benchmarks/record.schema.json)
   to `bench_out` (a name relative to `/sdcard/Android/data/<package>/files/`), atomically;
3. waits for that file, reads it (`adb exec-out cat`), checks every record against the schema;
4. removes the bundle and the file.

Needs a phone: nothing here can be checked without one except the failures before the first push
(no adb on PATH, no device, an unknown serial), which become error records with one line each.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import time

from edgestill.benchmarks.plan import Model, Point, facts, settings
from edgestill.benchmarks.record import error_record, now_utc, problems
from edgestill.recipe import Bench

log = logging.getLogger("benchmarks")
RESULT_TIMEOUT_S = 1800
POLL_S = 2.0


class TargetError(Exception):
    """The phone cannot run anything: every row of this target is an error."""


class Phone:
    def __init__(self, target: str, package: str):
        self.target, self.serial, self.package = target, target.removeprefix("adb://"), package
        exe = shutil.which("adb")
        if exe is None:
            raise TargetError(f"{target}: adb not found on PATH; install Android platform-tools "
                              "(apt-get install adb, or developer.android.com/tools/releases/platform-tools)")
        self.adb = [exe, *(["-s", self.serial] if self.serial else [])]

    def run(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([*self.adb, *args], capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            line = ((proc.stderr or proc.stdout).strip().splitlines() or ["no message"])[-1]
            raise TargetError(f"{self.target}: `adb {' '.join(args[:2])}` failed: {line}")
        return proc

    def check_device(self) -> None:
        proc = self.run("get-state", timeout=30, check=False)
        if proc.returncode != 0 or proc.stdout.strip() != "device":
            said = ((proc.stderr or proc.stdout).strip().splitlines() or ["no device"])[-1]
            which = f"device '{self.serial}'" if self.serial else "a device"
            raise TargetError(f"{self.target}: adb does not see {which} ({said}); connect the phone, enable USB "
                              "debugging and accept the prompt (`adb devices` must list it as 'device')")

    @property
    def files_dir(self) -> str:
        """The app's external files folder: adb can write it, the app can read it."""
        return f"/sdcard/Android/data/{self.package}/files"


def start_command(phone: Phone, bundle: str, out_name: str, point: Point, bench: Bench, run_id: str) -> list[str]:
    """The `am start` arguments that put the app in benchmark mode (android_demo/README.md)."""
    return ["shell", "am", "start", "-W", "-S", "-n", f"{phone.package}/.MainActivity",
            "--es", "bundle", bundle, "--es", "bench_out", out_name, "--ei", "threads", str(point.threads),
            "--ei", "prompt_tokens", str(point.prompt_tokens), "--ei", "gen_tokens", str(point.gen_tokens),
            "--ei", "repetitions", str(bench.repetitions), "--ei", "warmup", str(bench.warmup),
            "--es", "target", phone.target, "--es", "run_id", run_id, "--ez", "exit", "true"]


def wait_for_records(phone: Phone, out: str) -> list[dict]:
    """Poll the app's output file until it holds a JSON list (or one record); check each record."""
    deadline = time.monotonic() + RESULT_TIMEOUT_S
    while time.monotonic() < deadline:
        proc = phone.run("exec-out", "cat", out, check=False)
        try:
            data = json.loads(proc.stdout) if proc.returncode == 0 and proc.stdout.strip() else None
        except json.JSONDecodeError:
            data = None  # still being written
        if data is not None:
            records = data if isinstance(data, list) else [data]
            for record in records:
                bad = problems(record)
                if bad:
                    raise RuntimeError(f"{phone.target}: the app wrote a record that does not match "
                                       f"benchmarks/record.schema.json: {bad[0]}")
            return records
        time.sleep(POLL_S)
    raise RuntimeError(f"{phone.target}: no results in {out} after {RESULT_TIMEOUT_S} s; is {phone.package} "
                       "installed (android_demo/) and does it have the benchmark mode?")


def measure_model(phone: Phone, model: Model, points: list[Point], bench: Bench, first: int) -> list[dict]:
    """Push one bundle, run every point through the app, remove the bundle."""
    bundles_dir = f"{phone.files_dir}/bundles"
    remote = f"{bundles_dir}/{model.path.name}"
    phone.run("shell", "mkdir", "-p", bundles_dir)
    phone.run("push", str(model.path), f"{bundles_dir}/", timeout=1800)
    records, run_id = [], now_utc()
    for n, point in enumerate(points, first):
        out_name = f"edgestill-bench-{n}.json"
        out = f"{phone.files_dir}/{out_name}"
        try:
            phone.run("shell", "rm", "-f", out, check=False)
            phone.run(*start_command(phone, model.path.name, out_name, point, bench, run_id))
            got = wait_for_records(phone, out)
            records += [r | {"target": phone.target, "bundle": str(model.path)} for r in got]
        except RuntimeError as err:
            records.append(error_record(facts(model) | {"engine": "android-demo"},
                                        settings(point, bench, phone.target), str(err)))
        phone.run("shell", "rm", "-f", out, check=False)
    phone.run("shell", "rm", "-rf", remote, check=False)
    return records


def run_adb(target: str, models: list[Model], points: list[Point], bench: Bench) -> list[dict]:
    """Every (bundle, point) through the phone's app; error records for what could not run."""
    models = [m for m in models if m.engine == "edgestill-runtime"]
    records: list[dict] = []
    try:
        phone = Phone(target, bench.adb_package)
        phone.check_device()
        for i, model in enumerate(models):
            records += measure_model(phone, model, points, bench, i * len(points))
    except (TargetError, subprocess.TimeoutExpired) as err:
        message = str(err) if isinstance(err, TargetError) else f"{target}: adb gave no answer in {err.timeout:.0f} s"
        log.error("%s", message)
        done = {r["name"] for r in records}
        records += [error_record(facts(m) | {"engine": "android-demo"}, settings(p, bench, target), message)
                    for m in models if m.name not in done for p in points]
    return records
