"""A real OpenSSH server on 127.0.0.1 for the ssh:// target tests: its own host key, config, client key.

`start_sshd(folder)` runs Debian's `/usr/sbin/sshd -D` on a free unprivileged port, allowing only a
key it makes, for the user running the tests; the "board" is this machine, with a home of its own
(`folder/home`, set as HOME by sshd's SetEnv) so that nothing an earlier run left in the real home
(a cached venv) changes a result. Returns a `Sshd` with the target URL, the client key, the `ssh -o`
options that trust the server's host key, and `config_for(alias)`: an ssh config file that reaches
the server by a Host alias alone (HostName, Port, User, IdentityFile, known_hosts).
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


@dataclass
class Sshd:
    proc: subprocess.Popen
    port: int
    key: Path
    options: list[str]
    home: Path
    known_hosts: Path

    @property
    def target(self) -> str:
        return f"ssh://{getpass.getuser()}@127.0.0.1:{self.port}"

    def config_for(self, alias: str, path: Path, **extra: str) -> Path:
        """An ssh config file with `Host alias` -> this server (no port or user needed in the URL)."""
        entries = {"HostName": "127.0.0.1", "Port": str(self.port), "User": getpass.getuser(),
                   "IdentityFile": str(self.key), "IdentitiesOnly": "yes", "UserKnownHostsFile": str(self.known_hosts),
                   "StrictHostKeyChecking": "yes", **extra}
        path.write_text(f"Host {alias}\n" + "".join(f"    {k} {v}\n" for k, v in entries.items()))
        return path

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def write_config(folder: Path, port: int, host_key: Path, authorized: Path, home: Path) -> Path:
    config = folder / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}", f"AuthorizedKeysFile {authorized}",
        f"PidFile {folder / 'sshd.pid'}", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes", "PermitRootLogin prohibit-password", "UsePAM no", "StrictModes no",
        f"AllowUsers {getpass.getuser()}", "LogLevel ERROR", f"SetEnv HOME={home}", ""]))
    return config


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited: {proc.stderr.read().decode(errors='replace')}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError("sshd did not start listening")


def start_sshd(folder: Path) -> Sshd:
    folder.mkdir(parents=True, exist_ok=True)
    host_key, client_key = keygen(folder / "host_key"), keygen(folder / "client_key")
    authorized = folder / "authorized_keys"
    authorized.write_text(Path(f"{client_key}.pub").read_text())
    known = folder / "known_hosts"
    port = free_port()
    known.write_text(f"[127.0.0.1]:{port} {Path(f'{host_key}.pub').read_text()}")
    home = folder / "home"
    home.mkdir(exist_ok=True)
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation folder
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(write_config(folder, port, host_key, authorized, home))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_listening(port, proc)
    return Sshd(proc, port, client_key, [f"UserKnownHostsFile={known}", "StrictHostKeyChecking=yes"], home, known)
