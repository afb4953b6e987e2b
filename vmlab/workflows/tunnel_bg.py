"""`vmlab tunnel NAME --background / --stop`: a detached tunnel process with a pid file and a state file.

The detached process is `vmlab tunnel NAME` itself, started in its own session with its output in a log file.
Once its authenticated check passed it writes `<state>/tunnels/NAME.json` (0600: the URL holds the token) and
`NAME.pid`; the command that started it waits for those files, so it returns only with a working tunnel.

`--open` hands the browser `NAME.open.html` (0600, as Jupyter does), a page that redirects to the URL: the token
never appears on the browser's command line, where `ps` would show it to every user of this machine.
"""

from __future__ import annotations

import html
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vmlab import paths
from vmlab.errors import HostError
from vmlab.fileio import write_atomic
from vmlab.state import check_name


@dataclass(frozen=True)
class TunnelFiles:
    name: str

    @property
    def root(self) -> Path:
        root = paths.state_dir() / "tunnels"
        root.mkdir(mode=0o700, exist_ok=True)
        return root

    @property
    def pid(self) -> Path:
        return self.root / f"{check_name(self.name)}.pid"

    @property
    def state(self) -> Path:
        return self.root / f"{check_name(self.name)}.json"

    @property
    def log(self) -> Path:
        return self.root / f"{check_name(self.name)}.log"

    @property
    def redirect(self) -> Path:
        return self.root / f"{check_name(self.name)}.open.html"

    def clear(self) -> None:
        self.pid.unlink(missing_ok=True)
        self.state.unlink(missing_ok=True)
        self.redirect.unlink(missing_ok=True)


REDIRECT_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="0;url={url}">
<title>JupyterLab of {name}</title></head>
<body><p>Opening <a href="{url}">JupyterLab of {name}</a>...</p></body></html>
"""


def redirect_file(name: str, url: str) -> Path:
    """A private page (0600) that sends the browser to `url`: give the browser its file:// URL, not `url`.
    Example: `webbrowser.open(redirect_file("lab", tunnel.url).as_uri())`."""
    path = TunnelFiles(name).redirect
    write_private(path, REDIRECT_PAGE.format(url=html.escape(url, quote=True), name=html.escape(name)))
    return path


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` with mode 0600 from the start (then rename, so a reader never sees half)."""
    write_atomic(path, text)


def record_running(name: str, state: dict[str, Any]) -> None:
    """Called by the detached process once its tunnel answered: state first, pid file last (the signal)."""
    files = TunnelFiles(name)
    write_private(files.state, json.dumps({**state, "pid": os.getpid()}, indent=2))
    write_private(files.pid, f"{os.getpid()}\n")


def forget_running(name: str) -> None:
    """Called by the detached process on its way out, if the files are still its own."""
    files = TunnelFiles(name)
    if _read_pid(files) == os.getpid():
        files.clear()


def _read_pid(files: TunnelFiles) -> int | None:
    try:
        return int(files.pid.read_text().strip())
    except (OSError, ValueError):
        return None


def _is_our_tunnel(pid: int) -> bool:
    """Whether `pid` is alive and is a `vmlab tunnel` (a stale pid file may name a reused pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # another user's process: not ours
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            return False
        return b"vmlab" in args and b"tunnel" in args
    return True


def running(name: str) -> dict[str, Any] | None:
    """The state of lab `name`'s background tunnel, or None (a stale pid file is removed)."""
    files = TunnelFiles(name)
    pid = _read_pid(files)
    if pid is None:
        return None
    if not _is_our_tunnel(pid):
        files.clear()
        return None
    try:
        state: dict[str, Any] = json.loads(files.state.read_text())
    except (OSError, ValueError):
        return {"pid": pid}
    return state


def start(name: str, argv: list[str], timeout: float = 60.0) -> dict[str, Any]:
    """Run `vmlab tunnel NAME ARGV...` detached and return its state once the tunnel answered.

    Raises HostError when a tunnel for the lab is already running or the detached process gave up (with the
    last line of its log, which is the usual one-line error).
    """
    current = running(name)
    if current is not None:
        raise HostError(f"lab {name} already has a background tunnel (pid {current.get('pid')}, "
                        f"port {current.get('local_port')})", f"stop it first with `vmlab tunnel {name} --stop`")
    files = TunnelFiles(name)
    files.clear()
    with open(files.log, "w") as log:
        os.chmod(files.log, 0o600)
        proc = subprocess.Popen([sys.executable, "-m", "vmlab", "tunnel", name, "--no-open", *argv],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            lines = [s for s in files.log.read_text(errors="replace").splitlines() if s.strip()]
            why = lines[-1].removeprefix("vmlab: error: ") if lines else f"exit {proc.returncode}"
            raise HostError(f"the background tunnel to {name} did not start: {why}",
                            f"see {files.log}")
        if _read_pid(files) == proc.pid:
            state: dict[str, Any] = json.loads(files.state.read_text())
            return state
        time.sleep(0.1)
    proc.terminate()
    proc.wait(10)
    files.clear()
    raise HostError(f"the background tunnel to {name} did not answer within {timeout:.0f}s", f"see {files.log}")


def stop(name: str, timeout: float = 10.0) -> int | None:
    """End lab `name`'s background tunnel; returns its pid, or None when none was running."""
    files = TunnelFiles(name)
    pid = _read_pid(files)
    if pid is None or not _is_our_tunnel(pid):
        files.clear()
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _is_our_tunnel(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _is_our_tunnel(pid):
        os.kill(pid, signal.SIGKILL)
    files.clear()
    return pid
