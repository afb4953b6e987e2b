"""What runs on a lab's loopback once `vmlab up` has reached it over SSH: the server half of `up`.

`up` launches or resumes the VM, connects, writes the agent's settings, then hands the connection to a `LabServer`.
The default, `JupyterLabServer`, writes a fresh token into a root-only file, restarts the lab recipe's JupyterLab
unit and waits until it answers with that token. A JupyterHub spawner gives `up` its own server instead
(vmlab.hub.singleuser: jupyterhub-singleuser with the hub's environment), and reuses everything else.

Example::

    up(provider, "lab")                                     # JupyterLab with a fresh token
    up(provider, "cls-ana", server=SingleUserServer(...))   # what vmlab.hub.LabSpawner does
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Protocol

from vmlab import lab
from vmlab.engine.command import Command, sh
from vmlab.engine.host import Host
from vmlab.errors import HostError
from vmlab.state import LabRecord

Say = Callable[[str], None]


# Reads the token from stdin (never on a command line, where `ps` would show it) and asks Jupyter for its status.
STATUS_PROBE = r"""
import json, sys, time, urllib.request, urllib.error
token = sys.stdin.readline().strip()
port, deadline = int(sys.argv[1]), time.time() + float(sys.argv[2])
last = "no answer"
while time.time() < deadline:
    try:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/status",
                                     headers={"Authorization": "token " + token})
        with urllib.request.urlopen(req, timeout=5) as r:
            print(json.dumps({"status": r.status}))
            sys.exit(0)
    except urllib.error.HTTPError as e:
        last = f"HTTP {e.code}"
    except OSError as e:
        last = str(e)
    time.sleep(0.1)  # a refused local connection costs nothing; a coarser poll only delays the answer
print(json.dumps({"error": last}))
sys.exit(1)
"""

WRITE_TOKEN = r"""
umask 077
mkdir -p "$(dirname "$1")"
printf 'JUPYTER_TOKEN=%s\n' "$(cat)" > "$1.tmp" && mv -f "$1.tmp" "$1"
"""


class Stopwatch(dict[str, float]):
    """Named durations: `with watch.lap("boot_to_ssh"): ...` adds how long the block took."""

    def __init__(self) -> None:
        super().__init__()
        self.started = time.monotonic()

    @contextlib.contextmanager
    def lap(self, name: str) -> Iterator[None]:
        t0 = time.monotonic()
        try:
            yield
        finally:
            self[name] = self.get(name, 0.0) + time.monotonic() - t0

    def finish(self) -> dict[str, float]:
        self["total"] = time.monotonic() - self.started
        self["overhead"] = (self["total"] - self.get("boot_to_ssh", 0.0) - self.get("jupyter_start", 0.0)
                            - self.get("restore", 0.0))
        return dict(self)


class LabServer(Protocol):
    """The server `up` starts on the lab: `port` is where it listens on the lab's loopback (recorded as the
    lab's `jupyter_port`); `prepare` runs before the agent's settings (and its restore of ~/data) are sent,
    `start` after them. Both run as root over the lab's SSH connection; `record` is the lab's record, which
    `prepare` may complete (its token)."""

    port: int

    def prepare(self, conn: Host, record: LabRecord, watch: Stopwatch) -> None: ...

    def start(self, conn: Host, record: LabRecord, watch: Stopwatch, say: Say) -> None: ...


class JupyterLabServer:
    """The lab recipe's JupyterLab (vmlab.lab.SERVICE on 127.0.0.1:8888) with a fresh token at each `up`."""

    port = lab.PORT

    def __init__(self, timeout: float = 180.0) -> None:
        self.timeout = timeout

    def prepare(self, conn: Host, record: LabRecord, watch: Stopwatch) -> None:
        record.token = secrets.token_urlsafe(32)
        with watch.lap("token"):
            conn_run(conn, sh(WRITE_TOKEN, lab.ENV_FILE, stdin=record.token + "\n", label="write lab token"))

    def start(self, conn: Host, record: LabRecord, watch: Stopwatch, say: Say) -> None:
        with watch.lap("token"):
            conn_run(conn, Command("systemctl", "restart", lab.SERVICE))
        say("waiting for JupyterLab to answer")
        # the script rides in argv (it is no secret), the token on stdin (argv is visible to every user)
        with watch.lap("jupyter_start"):
            probe = conn.execute(Command("python3", "-c", STATUS_PROBE, str(record.jupyter_port),
                                         str(self.timeout), stdin=record.token + "\n", label="probe lab"))
        if probe.rc != 0:
            detail = (probe.stdout.strip() or probe.stderr.strip()).splitlines()[-1:] or [f"exit {probe.rc}"]
            raise HostError(f"JupyterLab on {record.name} did not answer: {detail[0]}",
                            f"see `vmlab ssh {record.name}` then `journalctl -u {lab.SERVICE}`")


def conn_run(conn: Host, command: Command) -> None:
    result = conn.execute(command, sudo=True)
    if result.rc != 0:
        raise HostError(f"`{command.describe()}` failed on the lab (exit {result.rc}): "
                        f"{result.stderr.strip()[-300:]}")
