"""podman, run with vmlab's own settings and storage: never the user's /etc/containers, never their images.

Every call sets CONTAINERS_CONF, CONTAINERS_STORAGE_CONF and CONTAINERS_REGISTRIES_CONF to files vmlab writes
under its engine root (`cache_dir()/container` by default):

- containers.conf: the settings these machines need (ENVIRONMENT.md): ulimits within the host's hard limits,
  cgroupfs (no systemd on the host to ask), runc (crun 1.8 refuses a hybrid cgroup setup), a file events log,
  and podman's temporary and network folders inside vmlab's own;
- storage.conf: overlay storage in `ROOT/storage`; the run root (mounts, locks, conmon sockets) in a short
  folder under $XDG_RUNTIME_DIR or /run (its name is the hash of ROOT, so two roots never share one);
- registries.conf: no search registries, so a short image name never goes to the internet. vmlab names every
  image `localhost/...`.

Example::

    engine = Podman(Path("/var/tmp/vmlab-ctr"))
    engine.check()                                   # BadInput when podman or runc are missing
    print(engine.text("images", "--format", "{{.Repository}}:{{.Tag}}"))
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vmlab.errors import BadInput, HostError
from vmlab.fileio import write_atomic
from vmlab.safetext import check_text

#: the tools the container provider runs; installed by INSTALL
TOOLS = ("podman", "runc", "slirp4netns")
INSTALL = "apt-get install podman runc slirp4netns skopeo"
#: how long a command may take before it counts as hung (an import or commit of a large image takes a minute)
TIMEOUT = 900.0


def default_root() -> Path:
    """The container provider's engine root: $VMLAB_CONTAINER_ROOT, else `cache_dir()/container` (images are large
    and rebuildable)."""
    from vmlab.paths import cache_dir

    override = os.environ.get("VMLAB_CONTAINER_ROOT")
    return Path(override) if override else cache_dir() / "container"


def _toml(value: Path) -> str:
    """A path as a TOML basic string (JSON's escapes are TOML's); a path with control characters is refused."""
    return json.dumps(check_text(str(value), "the container engine folder", "set VMLAB_CACHE_DIR to a plain path"))


class Podman:
    """podman with vmlab's configuration and storage under `root` (see the module docstring)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or default_root()).absolute()
        self.storage = self.root / "storage"
        runtime = os.environ.get("XDG_RUNTIME_DIR") or ("/run" if os.geteuid() == 0 else "")
        tag = hashlib.sha256(str(self.root).encode()).hexdigest()[:12]
        self.run_dir = Path(runtime) / f"vmlab-podman-{tag}" if runtime else self.root / "run"
        self._ready = False

    # ---- configuration -------------------------------------------------------------------------------------
    def config_files(self) -> dict[str, str]:
        """name -> text of the three files under `root/conf`."""
        containers = (
            "# written by vmlab: its own podman settings (the user's /etc/containers is never read or changed)\n"
            "[containers]\n"
            'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
            "[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f"events_logfile_path = {_toml(self.run_dir / 'events.log')}\n"
            'runtime = "runc"\n'
            f"tmp_dir = {_toml(self.run_dir / 'tmp')}\n"
            "[network]\n"
            f"network_config_dir = {_toml(self.root / 'networks')}\n"
        )
        storage = ("[storage]\n" 'driver = "overlay"\n'
                   f"graphroot = {_toml(self.storage)}\nrunroot = {_toml(self.run_dir / 'storage')}\n")
        registries = 'unqualified-search-registries = []\nshort-name-mode = "enforcing"\n'
        # skopeo's signature policy: vmlab copies out only images it made itself
        policy = '{"default": [{"type": "insecureAcceptAnything"}]}\n'
        return {"containers.conf": containers, "storage.conf": storage, "registries.conf": registries,
                "policy.json": policy}

    def env(self) -> dict[str, str]:
        conf = self.root / "conf"
        return {**os.environ, "CONTAINERS_CONF": str(conf / "containers.conf"),
                "CONTAINERS_STORAGE_CONF": str(conf / "storage.conf"),
                "CONTAINERS_REGISTRIES_CONF": str(conf / "registries.conf")}

    def check(self) -> None:
        """BadInput (with the install line) when a tool is missing; then writes the configuration."""
        absent = [tool for tool in TOOLS if shutil.which(tool) is None]
        if absent:
            raise BadInput(f"the container provider needs {', '.join(absent)}", INSTALL)
        self._configure()

    def _configure(self) -> None:
        if self._ready:
            return
        conf = self.root / "conf"
        conf.mkdir(parents=True, exist_ok=True, mode=0o700)
        for name, text in self.config_files().items():
            path = conf / name
            if not path.is_file() or path.read_text() != text:
                write_atomic(path, text, 0o644)
        self._ready = True

    # ---- running podman ------------------------------------------------------------------------------------
    def call(self, *args: str, stdin: bytes | None = None,
             timeout: float = TIMEOUT) -> subprocess.CompletedProcess[bytes]:
        """`podman ARGS` with vmlab's settings; never raises for a non-zero exit."""
        return self.tool("podman", *args, stdin=stdin, timeout=timeout)

    def inspect(self, kind: str, ident: str) -> dict[str, Any] | None:
        """`podman KIND inspect IDENT` (container, image or volume) as a dict; None when it does not exist."""
        proc = self.call(kind, "inspect", ident)
        if proc.returncode != 0:
            if missing(proc):
                return None
            raise HostError(f"podman {kind} inspect {ident} failed: {tail(proc.stderr)}")
        data = json.loads(proc.stdout or b"[]")
        return dict(data[0]) if data else None

    def tool(self, *argv: str, stdin: bytes | None = None, timeout: float = TIMEOUT,
             env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
        """A containers tool (podman, skopeo) run with vmlab's settings (`env`: variables added to its
        environment, e.g. the values of `-e NAME` words); never raises for a non-zero exit."""
        self._configure()
        if argv[0] == "skopeo":
            argv = ("skopeo", "--policy", str(self.root / "conf" / "policy.json"), *argv[1:])
        try:
            return subprocess.run(list(argv), input=stdin if stdin is not None else b"", capture_output=True,
                                  env={**self.env(), **(env or {})}, timeout=timeout, check=False)
        except FileNotFoundError as exc:
            raise BadInput(f"the container provider needs {argv[0]}", INSTALL) from exc
        except subprocess.TimeoutExpired as exc:
            raise HostError(f"{argv[0]} {argv[1]} did not finish in {timeout:.0f} s") from exc

    def text(self, *args: str, what: str = "", stdin: bytes | None = None, program: str = "podman",
             env: Mapping[str, str] | None = None) -> str:
        """stdout of `podman ARGS` (or another `program`); HostError naming `what` with its last lines when it
        fails."""
        proc = self.tool(program, *args, stdin=stdin, env=env)
        if proc.returncode != 0:
            raise HostError(f"{what or program + ' ' + args[0]} failed (exit {proc.returncode}): {tail(proc.stderr)}")
        return proc.stdout.decode(errors="replace")

    def json(self, *args: str, what: str = "") -> Any:
        return json.loads(self.text(*args, what=what) or "null")


def tail(stderr: bytes, lines: int = 3) -> str:
    """The last lines of an error output, joined on one line."""
    return " | ".join(stderr.decode(errors="replace").strip().splitlines()[-lines:])


def missing(proc: subprocess.CompletedProcess[bytes]) -> bool:
    """Whether podman failed because the container or image does not exist (exit 125 and a 'no such')."""
    text = proc.stderr.decode(errors="replace").lower()
    return proc.returncode != 0 and ("no such" in text or "image not known" in text or "not found" in text)


_PODMAN_TIME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d+)?(Z|[+-]\d\d:\d\d)?")


def utc_time(text: str) -> str | None:
    """podman's time ("2026-12-06T12:00:00.123456789+02:00", nanoseconds and the machine's offset) in UTC
    ("2026-12-06T10:00:00+00:00"); None when it is not one (podman's zero time for never started included)."""
    found = _PODMAN_TIME.match(text.strip())
    if not found or found.group(1).startswith("0001-"):
        return None
    zone = found.group(2) or "Z"
    when = datetime.fromisoformat(found.group(1) + ("+00:00" if zone == "Z" else zone))
    return when.astimezone(timezone.utc).isoformat()
