"""Pick the accelerator for local VMs: KVM only when a probe boot proves a guest really runs, TCG otherwise.

`/dev/kvm` existing is not proof: on some hosts (nested virtualisation without vmx/svm passed through) QEMU
starts under KVM and the guest never executes a line. The probe boots the base kernel without a root disk and
waits (at most ~10 s) for it to print to the serial port. The verdict is cached in the provider's cache dir,
keyed by the host kernel and QEMU version; `VMLAB_LOCAL_ACCEL=kvm|tcg` overrides it.

Example::

    choice = detect(root, kernel)      # Accel(name='tcg', reason='kvm probe: no kernel output in 10 s')
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from vmlab.errors import BadInput
from vmlab.providers.local import store
from vmlab.providers.local.qemu import QEMU

PROBE_TIMEOUT = 10.0
CACHE_FILE = "accel.json"
ACCELS = ("kvm", "tcg")


@dataclass(frozen=True)
class Accel:
    """The chosen accelerator and why (shown in debug output)."""

    name: str
    reason: str


def host_fingerprint() -> str:
    """What the verdict depends on: the host kernel and the QEMU binary."""
    try:
        qemu_version = subprocess.run([QEMU, "--version"], capture_output=True, text=True,
                                      check=False).stdout.splitlines()[0]
    except (OSError, IndexError):
        qemu_version = "unknown"
    return f"{os.uname().release} | {qemu_version}"


def kvm_device_usable(path: str = "/dev/kvm") -> tuple[bool, str]:
    """Whether /dev/kvm can be opened read-write by this process."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return False, f"{path}: {exc.strerror}"
    os.close(fd)
    return True, f"{path} opens"


def probe_argv(kernel: Path) -> list[str]:
    """A throwaway boot: the kernel alone, console on stdout, exit instead of rebooting after the panic."""
    return [QEMU, "-accel", "kvm", "-cpu", "host", "-m", "256", "-nodefaults", "-no-reboot",
            "-display", "none", "-serial", "stdio", "-kernel", str(kernel),
            "-append", "console=ttyS0 panic=-1 earlyprintk=serial"]


def probe_kvm(kernel: Path, timeout: float = PROBE_TIMEOUT) -> tuple[bool, str]:
    """Boot `kernel` under KVM and watch the serial output for the kernel banner."""
    try:
        proc = subprocess.Popen(probe_argv(kernel), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL)
    except OSError as exc:
        return False, f"kvm probe: {exc}"
    assert proc.stdout is not None and proc.stderr is not None
    seen = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 0.2)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 65536)
                seen = (seen + chunk)[-65536:]
                if b"Linux version" in seen:
                    return True, "kvm probe: guest kernel booted"
                if not chunk:
                    break
            elif proc.poll() is not None:
                break
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace").strip().splitlines()
            return False, f"kvm probe: qemu exited {proc.returncode}: {err[-1] if err else ''}".rstrip(": ")
        return False, f"kvm probe: no kernel output in {timeout:.0f} s"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def detect(root: Path, kernel: Path, *, refresh: bool = False) -> Accel:
    """The accelerator to use, probing once per host (cached in `root/accel.json`)."""
    forced = os.environ.get("VMLAB_LOCAL_ACCEL", "").strip().lower()
    if forced:
        if forced not in ACCELS:
            raise BadInput(f"VMLAB_LOCAL_ACCEL={forced!r} is not one of {', '.join(ACCELS)}", "unset it")
        return Accel(forced, "VMLAB_LOCAL_ACCEL")
    cache = root / CACHE_FILE
    fingerprint = host_fingerprint()
    if not refresh and cache.is_file():
        try:
            data = json.loads(cache.read_text())
            if data.get("host") == fingerprint and data.get("accel") in ACCELS:
                return Accel(str(data["accel"]), f"cached: {data.get('reason', '')}")
        except (OSError, ValueError, AttributeError):
            pass  # a damaged cache is simply probed again
    ok, reason = kvm_device_usable()
    if ok:
        ok, reason = probe_kvm(kernel)
    choice = Accel("kvm" if ok else "tcg", reason)
    root.mkdir(parents=True, exist_ok=True)
    store.write_json(cache, {"accel": choice.name, "reason": reason, "host": fingerprint,
                             "probed_at": store.now()}, mode=0o644)
    return choice
