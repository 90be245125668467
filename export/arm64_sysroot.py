"""An emulated ARM64 Linux for checking bundles on ARM64's kernels from an x86 machine.

    python -m edgestill.export.arm64_sysroot            # build (or check) it: ~70 MB downloaded once
    python -m edgestill.export.arm64_sysroot --where    # print its folder

onnxruntime runs different CPU kernels on ARM64 (NEON, dot-product, i8mm) than on x86
(AVX2/AVX-512 VNNI), so a bundle's quantized numerics can differ. No ARM64 device is lent to
this project, so `export.arm64` runs the bundles in qemu-user instead. This module builds what
that needs, with no root and no change to the host system:

- `root/`: an aarch64 userland from Debian bookworm's arm64 packages (CPython 3.11, glibc,
  libstdc++), each .deb checked against the sha256 in Debian's signed-by-release `Packages`
  index and unpacked with Python (`ar` + `tar`), never installed;
- `site/`: the runtime's dependencies as PyPI's manylinux aarch64 wheels, at the versions this
  Python has installed (so both sides run the same onnxruntime);
- `qemu-aarch64-static`: from PATH, else unpacked from Debian's amd64 `qemu-user-static`;
- `cpu-<model>/`: one view of `root/` per emulated CPU with a matching `/proc/cpuinfo`.
  qemu-user opens paths under its `-L` prefix first, and onnxruntime's cpuinfo library
  crashes on the host's x86 `/proc/cpuinfo` (SIGSEGV at import), so each CPU model
  gets a truthful one (the same MIDR and feature flags the real core reports).

The folder is `$EDGESTILL_CACHE/arm64` (default ~/.cache/edgestill/arm64). Emulated timings say
nothing about a real device: this environment is for numerics only.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import lzma
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from edgestill.errors import UserError, cli_main
from edgestill.files import atomic_write_text

DEBIAN = "http://deb.debian.org/debian"
SUITE = "bookworm"
PYTHON = "3.11"
ARM64_DEBS = ["python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libc6", "libexpat1",
              "zlib1g", "libffi8", "libssl3", "libgcc-s1", "libstdc++6", "libbz2-1.0", "liblzma5", "libuuid1",
              "libgomp1"]
# The runtime's dependencies (pyproject.toml), pinned to the versions installed here.
WHEELS = ["numpy", "onnxruntime", "tokenizers", "jinja2", "markupsafe", "pyyaml"]
WHEEL_PLATFORMS = ["manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64"]

# /proc/cpuinfo of each emulated core: (MIDR variant, part, revision, Features), as the real
# core reports them. qemu gives the program the matching HWCAPs itself.
CPUS = {
    "cortex-a53": ("0x0", "0xd03", "4", "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"),
    "cortex-a72": ("0x0", "0xd08", "3", "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"),
    "cortex-a76": ("0x4", "0xd0b", "1", "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp "
                                        "cpuid asimdrdm lrcpc dcpop asimddp"),
    "neoverse-n1": ("0x3", "0xd0c", "1", "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp "
                                         "cpuid asimdrdm lrcpc dcpop asimddp ssbs"),
}
DEVICES = {"cortex-a53": "Raspberry Pi 3, low-end phones (no dot product)",
           "cortex-a72": "Raspberry Pi 4 (no dot product, no fp16 arithmetic)",
           "cortex-a76": "Raspberry Pi 5, 2019-2021 phones (dot product, fp16)",
           "neoverse-n1": "ARM servers such as AWS Graviton2 (dot product, fp16)"}


def folder() -> Path:
    """Where the sysroot lives: `$EDGESTILL_CACHE/arm64` or ~/.cache/edgestill/arm64."""
    return Path(os.environ.get("EDGESTILL_CACHE", Path.home() / ".cache" / "edgestill")) / "arm64"


@dataclass(frozen=True)
class Sysroot:
    """A built sysroot: `command(cpu)` is the argv prefix that runs its Python on that core."""

    path: Path

    @property
    def qemu(self) -> Path | None:
        local = self.path / "qemu-aarch64-static"
        found = shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")
        return local if local.exists() else Path(found) if found else None

    def command(self, cpu: str) -> list[str]:
        if cpu not in CPUS:
            raise UserError(f"--cpu {cpu}: not an emulated core; choose from {', '.join(CPUS)}")
        view = cpu_view(self.path, cpu)
        return [str(self.qemu), "-cpu", cpu, "-L", str(view), str(self.path / "root" / "usr" / "bin" / f"python{PYTHON}")]

    def env(self, code_root: Path) -> dict:
        """Environment for the emulated Python: its wheels, then the repository's code."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env["PYTHONPATH"] = f"{self.path / 'site'}{os.pathsep}{code_root}"
        env["PYTHONNOUSERSITE"] = "1"
        return env


def find() -> Sysroot | None:
    """The built sysroot, or None when `python -m edgestill.export.arm64_sysroot` has not finished."""
    root = Sysroot(folder())
    ready = (root.path / ".ready").exists()
    return root if ready and root.qemu else None


def cpu_view(path: Path, cpu: str) -> Path:
    """`cpu-<model>/`: symlinks to root/'s top folders plus that core's /proc/cpuinfo."""
    view = path / f"cpu-{cpu}"
    info = view / "proc" / "cpuinfo"
    if not info.exists():
        (view / "proc").mkdir(parents=True, exist_ok=True)
        for top in (path / "root").iterdir():
            link = view / top.name
            if not link.exists():
                link.symlink_to(Path("..") / "root" / top.name)
        atomic_write_text(info, cpuinfo(cpu))
    return view


def cpuinfo(cpu: str, cores: int = 2) -> str:
    """/proc/cpuinfo text for `cores` cores of model `cpu`."""
    variant, part, revision, features = CPUS[cpu]
    one = ("processor\t: {i}\nBogoMIPS\t: 50.00\nFeatures\t: " + features + "\nCPU implementer\t: 0x41\n"
           "CPU architecture: 8\nCPU variant\t: " + variant + "\nCPU part\t: " + part +
           "\nCPU revision\t: " + revision + "\n\n")
    return "".join(one.format(i=i) for i in range(cores))


# ---------------------------------------------------------------------------- building


def fetch(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            return r.read()
    except OSError as err:
        raise UserError(f"cannot download {url} ({err}); the ARM64 check needs Debian's mirror and PyPI "
                        "once, to build its sysroot") from err


def package_index(arch: str) -> dict[str, dict[str, str]]:
    """Debian's `Packages` index for `arch`: package name -> its fields (Filename, SHA256, ...)."""
    text = lzma.decompress(fetch(f"{DEBIAN}/dists/{SUITE}/main/binary-{arch}/Packages.xz")).decode()
    index = {}
    for stanza in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " ")
        if "Package" in fields:
            index[fields["Package"]] = fields
    return index


def deb_data(deb: bytes) -> tarfile.TarFile:
    """The data.tar.* member of a .deb (an `ar` archive), opened."""
    if not deb.startswith(b"!<arch>\n"):
        raise ValueError("not a .deb (ar) archive")
    pos = 8
    while pos < len(deb):
        name, size = deb[pos:pos + 16].strip().decode(), int(deb[pos + 48:pos + 58])
        body = deb[pos + 60:pos + 60 + size]
        if name.startswith("data.tar"):
            return tarfile.open(fileobj=io.BytesIO(body))
        pos += 60 + size + (size % 2)
    raise ValueError("no data.tar member")


def unpack_debs(names: list[str], arch: str, dest: Path) -> None:
    """Download `names` from Debian (sha256-checked) and unpack their files into `dest`."""
    index = package_index(arch)
    for name in names:
        if name not in index:
            raise UserError(f"Debian {SUITE}/{arch} has no package {name}")
        entry = index[name]
        deb = fetch(f"{DEBIAN}/{entry['Filename']}")
        if hashlib.sha256(deb).hexdigest() != entry["SHA256"]:
            raise UserError(f"{entry['Filename']}: sha256 differs from Debian's index; try again later")
        with deb_data(deb) as tar:
            tar.extractall(dest, filter="tar")


def pins() -> list[str]:
    """`name==version` of each of WHEELS as installed in this Python."""
    return [f"{name}=={metadata.version(name)}" for name in WHEELS]


def install_wheels(site: Path) -> None:
    """The runtime's dependencies as aarch64 wheels, at this Python's installed versions."""
    platforms = [arg for p in WHEEL_PLATFORMS for arg in ("--platform", p)]
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--only-binary=:all:", "--target",
           str(site), *platforms, "--python-version", PYTHON, "--implementation", "cp", *pins()]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise UserError(f"pip could not fetch the aarch64 wheels {' '.join(pins())}:\n{done.stderr[-2000:]}")


def build(path: Path) -> Sysroot:
    """Build the sysroot in a temp folder next to `path`, then rename it into place."""
    if platform.machine() not in ("x86_64", "AMD64") and not shutil.which("qemu-aarch64-static"):
        raise UserError("the ARM64 check emulates ARM64 with qemu-user on an x86_64 host; "
                        f"this machine is {platform.machine()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=".arm64-"))
    try:
        unpack_debs(ARM64_DEBS, "arm64", tmp / "root")
        if not shutil.which("qemu-aarch64-static"):
            unpack_debs(["qemu-user-static"], "amd64", tmp / "qemu")
            shutil.move(tmp / "qemu" / "usr" / "bin" / "qemu-aarch64-static", tmp / "qemu-aarch64-static")
            shutil.rmtree(tmp / "qemu")
        install_wheels(tmp / "site")
        (tmp / ".ready").write_text(" ".join(pins()) + "\n")
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Sysroot(path)


def ensure() -> Sysroot:
    """The sysroot, built first if needed (or if this Python's runtime versions changed)."""
    found = find()
    if found and (found.path / ".ready").read_text() == " ".join(pins()) + "\n":
        return found
    return build(folder())


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgestill.export.arm64_sysroot", description=__doc__.split("\n")[0])
    parser.add_argument("--where", action="store_true", help="print the sysroot's folder and exit")
    args = parser.parse_args(argv)
    if args.where:
        print(folder())
        return 0
    root = ensure()
    probe = subprocess.run([*root.command("cortex-a76"), "-c", "import onnxruntime, platform; "
                            "print(platform.machine(), 'onnxruntime', onnxruntime.__version__)"],
                           env=root.env(Path.cwd()), capture_output=True, text=True, timeout=300)
    if probe.returncode:
        raise UserError(f"the emulated Python in {root.path} fails: {probe.stderr.strip()[-500:]}")
    print(f"{root.path}: {probe.stdout.strip()}")
    return 0


if __name__ == "__main__":
    cli_main(main)
