"""The `ssh://[user@]host[:port]` target: an edge board (Raspberry Pi, Jetson, any Linux box with Python 3).

Uses the system's OpenSSH client (`ssh`), and passes `-p` and the user only when the URL gives them,
so the user's ~/.ssh/config applies as it does for `ssh host` (Host aliases, HostName, Port, User,
IdentityFile, ProxyJump), with agents and known_hosts as usual. `bench.ssh_config` names another
config file (`ssh -F`); `bench.ssh_key` and `bench.ssh_options` add `-i` and `-o` on top. The files
travel through the same ssh connection (tar streams), so the config applies to them too. For one target:

1. logs in (BatchMode: never prompts) and finds Python: `bench.remote_python`, used as given (it must
   import onnxruntime, numpy, tokenizers, jinja2); without it, `python3` when it imports them, else
   the venv `~/.cache/edgestill-bench/venv` there, made (and pip-installed) when `bench.remote_install`;
   the record's `machine.executable` says which Python ran;
3. copies the runtime (`runtime/`, `edgestill/`, the measuring modules of `benchmarks/`) and each
   bundle into a fresh `mktemp -d` folder, as one tar stream per copy;
4. runs `python -m edgestill.benchmarks.measure` there once per (bundle, point): a fresh process each,
   the record comes back on stdout;
5. removes the folder (the venv stays for the next run).

Every failure becomes error records with one line saying what to do: unreachable host, wrong key,
no Python, no onnxruntime, a bundle that does not load there. The other rows still run.
"""

from __future__ import annotations

import logging
import re
import shlex
import subprocess
import tarfile
from pathlib import Path

from edgestill.benchmarks.measure import measure_args
from edgestill.benchmarks.plan import Model, Point, facts, settings
from edgestill.benchmarks.record import error_record
from edgestill.errors import UserError
from edgestill.layout import runtime_files
from edgestill.recipe import Bench
from edgestill.worker import result_of

log = logging.getLogger("benchmarks")
# what the board needs to run measure.py: the edgestill core modules (errors, machine, worker, ...),
# the runtime and these benchmark modules, laid out as the edgestill package
BENCH_CODE = ("__init__.py", "measure.py", "peers.py")


def code_files() -> list[tuple[Path, str]]:
    """(local path, path on the board) of the code measure.py runs, from wherever edgestill is installed."""
    here = Path(__file__).parent
    return runtime_files() + [(here / name, f"edgestill/benchmarks/{name}") for name in BENCH_CODE]
PACKAGES = ["onnxruntime", "numpy", "tokenizers", "jinja2"]
VENV = "~/.cache/edgestill-bench/venv"
TARGET = re.compile(r"^ssh://((?P<user>[^@/:\s]+)@)?(?P<host>[^@:/\s]+)(:(?P<port>\d{1,5}))?$")
CONNECT_TIMEOUT_S = 10
MEASURE_TIMEOUT_S = 3600


class TargetError(Exception):
    """The target cannot run anything (login, Python, packages): every row of it is an error."""


def parse(target: str) -> tuple[str | None, str, int | None]:
    """(user, host, port) of `ssh://[user@]host[:port]`; None where the URL leaves it to the ssh config."""
    m = TARGET.match(target)
    if not m:
        raise UserError(f"target '{target}': expected ssh://[user@]host[:port]")
    return m["user"], m["host"], int(m["port"]) if m["port"] else None


def ssh_command(target: str, bench: Bench) -> list[str]:
    """`ssh ... [user@]host` without the remote command: never prompts, gives up after 10 s; `-p`
    and the user only when the URL has them, so the ssh config's Port and User apply otherwise."""
    user, host, port = parse(target)
    cmd = ["ssh"]
    if bench.ssh_config:
        cmd += ["-F", str(Path(bench.ssh_config).expanduser())]
    if port is not None:
        cmd += ["-p", str(port)]
    cmd += ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}", "-o", "LogLevel=ERROR"]
    if bench.ssh_key:
        cmd += ["-i", str(Path(bench.ssh_key).expanduser()), "-o", "IdentitiesOnly=yes"]
    for option in bench.ssh_options:
        cmd += ["-o", option]
    return cmd + ["--", f"{user}@{host}" if user else host]


DEFAULT_KEYS = {f"id_{k}" for k in ("rsa", "ecdsa", "ecdsa_sk", "ed25519", "ed25519_sk", "xmss", "dsa")}


def resolved_config(ssh: list[str]) -> dict[str, list[str]]:
    """What ssh makes of the target after its config (`ssh -G`): {keyword: [values]}; {} if it cannot say."""
    try:
        proc = subprocess.run([ssh[0], "-G", *ssh[1:]], capture_output=True, text=True, timeout=CONNECT_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    config: dict[str, list[str]] = {}
    for line in proc.stdout.splitlines():
        key, _, value = line.partition(" ")
        config.setdefault(key.lower(), []).append(value.strip())
    return config


def missing_identities(config: dict[str, list[str]]) -> list[str]:
    """IdentityFiles the config names that do not exist here (ssh skips them without a word); ssh's
    default key names are left out, they are only tried when there."""
    return [f for f in config.get("identityfile", [])
            if Path(f).name not in DEFAULT_KEYS and not Path(f).expanduser().exists()]


LOGIN_HINTS = {
    "Permission denied": "the key is not accepted: check bench.ssh_key (or the ssh config's IdentityFile) and the "
                         "board's authorized_keys",
    "Connection refused": "nothing listens there: check the port (the URL's, else the ssh config's Port) and that "
                          "sshd runs on the board",
    "timed out": "no answer: check the host is up and reachable",
    "Could not resolve": "unknown host: neither a Host alias of the ssh config nor a name that resolves; check the "
                         "spelling, the config (bench.ssh_config, else ~/.ssh/config) or use the IP address",
    "Host key verification failed": "the host key is unknown or changed: check known_hosts",
}


def login_error(target: str, stderr: str, config: dict[str, list[str]] | None = None) -> str:
    """One line for an ssh failure (exit 255), with what to check; `config` (ssh -G) names a missing
    IdentityFile or a ProxyJump that failed."""
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()] or ["no message"]
    message, last = " / ".join(lines[-2:]), lines[-1]
    hint = next((h for k, h in LOGIN_HINTS.items() if k in last), "check the target and bench.ssh_options")
    config = config or {}
    jump = [j for j in config.get("proxyjump", []) if j and j != "none"]
    if jump and ("kex_exchange_identification" in last or "UNKNOWN port" in last or "Connection closed" in last):
        hint = (f"the jump host (ProxyJump {jump[0]}) did not carry the connection: check that it is reachable "
                "and can reach the board")
    missing = missing_identities(config)
    if missing and "Permission denied" in last:
        hint = f"the IdentityFile {missing[0]} does not exist: fix the ssh config or set bench.ssh_key"
    return f"{target}: cannot log in ({message}); {hint}"


class Board:
    """One ssh target: run commands, copy files as tar streams."""

    def __init__(self, target: str, bench: Bench):
        self.target, self.ssh = target, ssh_command(target, bench)

    def run(self, command: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([*self.ssh, command], capture_output=True, text=True, timeout=timeout)
        if proc.returncode == 255:
            raise TargetError(login_error(self.target, proc.stderr, resolved_config(self.ssh)))
        if check and proc.returncode != 0:
            raise TargetError(f"{self.target}: `{command}` failed (exit {proc.returncode}): "
                              f"{(proc.stderr.strip().splitlines() or ['no message'])[-1]}")
        return proc

    def put(self, sources: list[tuple[Path, str]], remote_dir: str, timeout: float = 1800) -> None:
        """Copy local files/folders to `remote_dir/<name>` as one tar stream (no __pycache__)."""
        proc = subprocess.Popen([*self.ssh, f"tar -C {shlex.quote(remote_dir)} -xf -"], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            with tarfile.open(fileobj=proc.stdin, mode="w|") as tar:
                for path, name in sources:
                    tar.add(path, arcname=name, filter=lambda t: None if "__pycache__" in t.name else t)
        except BrokenPipeError:
            pass
        finally:
            proc.stdin.close()
        stderr = proc.stderr.read().decode(errors="replace")
        if proc.wait(timeout=timeout) != 0:
            raise TargetError(login_error(self.target, stderr, resolved_config(self.ssh)) if proc.returncode == 255 else
                              f"{self.target}: copying to {remote_dir} failed: {stderr.strip()[-300:]}")


def imports_ok(board: Board, python: str) -> bool:
    code = f"import {', '.join(PACKAGES)}"
    return board.run(f"{python} -c {shlex.quote(code)}", check=False).returncode == 0


def find_python(board: Board, bench: Bench) -> str:
    """A Python on the board that imports onnxruntime & co: `bench.remote_python` as given, else
    python3, else the cached venv (made there when allowed)."""
    python = shlex.quote(bench.remote_python or "python3")
    if board.run(f"{python} -c 'import sys; assert sys.version_info >= (3, 10)'", check=False).returncode != 0:
        raise TargetError(f"{board.target}: no Python 3.10+ at '{bench.remote_python or 'python3'}' on the board; "
                          "install python3 there or set bench.remote_python to its path")
    if imports_ok(board, python):
        return python
    if bench.remote_python:  # named by the user: never swapped for the cached venv behind their back
        raise TargetError(f"{board.target}: bench.remote_python {bench.remote_python} cannot import "
                          f"{', '.join(PACKAGES)}; `{bench.remote_python} -m pip install {' '.join(PACKAGES)}` there, "
                          "or leave bench.remote_python unset to use python3 or the venv of bench.remote_install")
    venv_python = f"{VENV}/bin/python"
    if imports_ok(board, venv_python):
        return venv_python
    if not bench.remote_install:
        raise TargetError(f"{board.target}: the board's Python cannot import {', '.join(PACKAGES)}; "
                          f"`pip install {' '.join(PACKAGES)}` there, or set bench.remote_install=true")
    log.info("%s: creating %s with %s", board.target, VENV, ", ".join(PACKAGES))
    board.run(f"{python} -m venv {VENV} && {venv_python} -m pip install -q {' '.join(PACKAGES)} psutil",
              timeout=1800)
    if not imports_ok(board, venv_python):
        raise TargetError(f"{board.target}: installed {', '.join(PACKAGES)} into {VENV} but cannot import them")
    return venv_python


def measure_remote(board: Board, python: str, workdir: str, model: Model, point: Point, bench: Bench) -> dict:
    """One record measured on the board; its `bundle` is the local path the user gave."""
    args = measure_args(f"bundles/{model.path.name}", point.threads, point.prompt_tokens, point.gen_tokens,
                        bench.repetitions, warmup=bench.warmup, target=board.target, pin=bench.pin_threads,
                        name=model.name, role=model.role)
    command = f"cd {shlex.quote(workdir)} && {python} -m edgestill.benchmarks.measure {shlex.join(args)}"
    proc = board.run(command, timeout=MEASURE_TIMEOUT_S, check=False)
    record = result_of(proc, f"measuring {model.name} on {board.target}", tail_chars=0)
    return record | {"bundle": str(model.path)}


def run_ssh(target: str, models: list[Model], points: list[Point], bench: Bench) -> list[dict]:
    """Every (model, point) on the board; error records for what could not run."""
    models = [m for m in models if m.engine == "edgestill-runtime"]
    board, workdir = Board(target, bench), None
    records = []
    try:
        python = find_python(board, bench)
        workdir = board.run("mktemp -d /tmp/edgestill-bench.XXXXXX").stdout.strip()
        board.put(code_files(), workdir)
        board.run(f"mkdir -p {shlex.quote(workdir)}/bundles")
        for model in models:
            records += measure_model(board, python, workdir, model, points, bench)
    except (TargetError, subprocess.TimeoutExpired) as err:
        message = str(err) if isinstance(err, TargetError) else f"{target}: no answer within {err.timeout:.0f} s"
        log.error("%s", message)
        done = {(r["name"], r["threads"], r["prompt_tokens"], r["gen_tokens"]) for r in records}
        records += [error_record(facts(m), settings(p, bench, target), message) for m in models for p in points
                    if (m.name, p.threads, p.prompt_tokens, p.gen_tokens) not in done]
    finally:
        if workdir:
            try:
                board.run(f"rm -rf {shlex.quote(workdir)}", check=False)
            except (TargetError, subprocess.TimeoutExpired):
                log.warning("%s: could not remove %s", target, workdir)
    return records


def measure_model(board: Board, python: str, workdir: str, model: Model, points: list[Point],
                  bench: Bench) -> list[dict]:
    """Copy one bundle over, measure it at every point, remove it (boards have little disk)."""
    board.put([(model.path, f"bundles/{model.path.name}")], workdir)
    records = []
    for point in points:
        log.info("%s: %s, threads %d, %d prompt + %d generated tokens", board.target, model.name,
                 point.threads, point.prompt_tokens, point.gen_tokens)
        try:
            records.append(measure_remote(board, python, workdir, model, point, bench))
        except (UserError, RuntimeError) as err:
            log.error("  %s: %s", model.name, err)
            records.append(error_record(facts(model), settings(point, bench, board.target), str(err)))
    board.run(f"rm -rf {shlex.quote(workdir)}/bundles/{shlex.quote(model.path.name)}", check=False)
    return records
