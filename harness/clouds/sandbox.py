"""A throwaway root host for tests: the test machine's own files, seen through a private overlay, served by a real
OpenSSH sshd on 127.0.0.1 — a builder that `vmlab bake` may scrub, in a fraction of a second instead of a VM boot.

How it is made (all as root, nothing outside the temp dir is written):

- `unshare -m --propagation private` gives the sandbox its own mount namespace, so nothing mounted in it is seen
  outside and nothing propagates back.
- In it, an overlayfs whose lowest layer is the real `/` (read only: overlayfs never writes a lower layer) and
  whose upper and work dirs are in the temp dir: every write, delete (a whiteout) or truncate inside lands in the
  upper dir. Above `/` sits a "mask" layer of opaque, empty /root, /home, /tmp, /var/tmp and /opt, so the secret
  scan never sees the test machine's keys and histories (nor walks its 8 GB of /opt); the same layer holds an
  /etc/vmlab/scan-ignore that keeps the scan (which reads the whole disk) out of the machine's other trees (/usr,
  /var/lib, /work, ...: see `scan_ignore()`), and `layers` (upper dirs
  kept from earlier sandboxes, see `stop(keep=...)`) go on top: an "image" baked in one sandbox is the root of
  the next, as an AMI is for the next instance.
- /proc and /dev are rbind-mounted in, `share` paths of the test machine are bind-mounted read only (the up test
  shares /root/.pyenv, where the Python of the test venv and its JupyterLab live), then a holder process chroots
  into the root and sleeps. Everything later started in the sandbox (sshd, its sessions, units) enters the same
  namespace and root with `nsenter`; `path()` reaches its files through /proc/PID/root.
- sshd runs with its own config (/etc/vmlab-sandbox/sshd_config inside) on 127.0.0.1:`port`, with the host key
  and authorized keys where cloud-init puts them: /etc/ssh/ssh_host_ed25519_key and /root/.ssh/authorized_keys.
  Nothing is there until `install_keys()` (a test "playing cloud-init"); until `start_sshd()` the port refuses.

Stood in: systemd, and only systemd. The host runs none (PID 1 is not systemd and there is no system bus), and
booting one costs what a VM boot costs. /usr/local/bin/systemctl inside the sandbox is a small script that
implements daemon-reload, enable/disable/is-enabled and start/stop/restart/is-active of a unit by running its
ExecStart with its EnvironmentFile, Environment, User and WorkingDirectory (honouring ConditionPathExists), which
is what vmlab's recipes and `vmlab up` ask of systemd. Everything else (sshd, the shell, python3, JupyterLab) is
the real program.

`stop()` kills every process in the sandbox's namespace, which unmounts everything with it, and deletes the temp
dir; the real `/` is untouched throughout.

Example::

    with Sandbox() as box:
        box.install_keys(host_private_key_text, client_public_key_line)
        box.start_sshd()                        # then ssh root@127.0.0.1 -p box.port
        assert box.path("/etc/hostname").read_text() == Path("/etc/hostname").read_text()
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from harness.emulators.sshd import SFTP_SERVER, SSHD_BIN, free_port, wait_for_banner

#: folders of the test machine the sandbox shows empty (mode per folder)
MASKED = {"root": 0o700, "home": 0o755, "tmp": 0o1777, "var/tmp": 0o1777, "opt": 0o755}
SSHD_CONFIG = "/etc/vmlab-sandbox/sshd_config"
HOST_KEY = "/etc/ssh/ssh_host_ed25519_key"
AUTHORIZED_KEYS = "/root/.ssh/authorized_keys"

SYSTEMCTL = r'''#!/usr/bin/python3
"""systemctl stand-in of vmlab's test sandbox (harness/clouds/sandbox.py), where no systemd runs: the unit verbs
vmlab uses, done by running the unit's ExecStart as a plain process."""
import os, pwd, shlex, signal, subprocess, sys, time

UNIT_DIRS = ("/etc/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system")
WANTS = "/etc/systemd/system/multi-user.target.wants"
RUN = "/run/vmlab-systemctl"


def unit_file(name):
    return next((os.path.join(d, name) for d in UNIT_DIRS if os.path.isfile(os.path.join(d, name))), None)


def parse(path):
    keys, pending = {}, ""
    for raw in open(path).read().splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;[":
            continue
        key, _, value = line.partition("=")
        keys.setdefault(key.strip(), []).append(value.strip())
    return keys


def pid_of(name):
    try:
        pid = int(open(os.path.join(RUN, name + ".pid")).read())
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except (OSError, ValueError):
        return None
    return None if state == "Z" else pid


def start(name):
    if pid_of(name):
        return 0
    path = unit_file(name)
    if path is None:
        print(f"Failed to start {name}: Unit {name} not found.", file=sys.stderr)
        return 5
    unit = parse(path)
    for cond in unit.get("ConditionPathExists", []):
        if os.path.exists(cond.lstrip("!")) == cond.startswith("!"):
            return 0  # systemd skips the unit and reports success
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    for item in unit.get("Environment", []):
        for pair in shlex.split(item):
            k, _, v = pair.partition("=")
            env[k] = v
    for ef in unit.get("EnvironmentFile", []):
        optional, ef = ef.startswith("-"), ef.lstrip("-")
        if not os.path.exists(ef) and optional:
            continue
        for line in open(ef).read().splitlines():
            if line.strip() and not line.lstrip().startswith("#") and "=" in line:
                k, _, v = line.partition("=")
                v = v.strip()
                if len(v) > 1 and v[0] == v[-1] and v[0] in "'\"":  # a quoted value, as systemd reads it
                    v = v[1:-1]
                env[k.strip()] = v
    user = pwd.getpwnam(unit.get("User", ["root"])[-1])
    env.update(HOME=user.pw_dir, USER=user.pw_name, LOGNAME=user.pw_name)

    def become():
        os.setgid(user.pw_gid)
        os.initgroups(user.pw_name, user.pw_gid)
        os.setuid(user.pw_uid)

    os.makedirs(RUN, exist_ok=True)
    os.makedirs("/var/log/vmlab-systemctl", exist_ok=True)
    log = open(f"/var/log/vmlab-systemctl/{name}.log", "ab")
    proc = subprocess.Popen(shlex.split(unit["ExecStart"][-1].lstrip("-@")), env=env, stdin=subprocess.DEVNULL,
                            stdout=log, stderr=log, cwd=unit.get("WorkingDirectory", ["/"])[-1],
                            preexec_fn=become, start_new_session=True)
    open(os.path.join(RUN, name + ".pid"), "w").write(str(proc.pid))
    return 0


def stop(name):
    pid = pid_of(name)
    if pid:
        os.killpg(pid, signal.SIGTERM)
        for _ in range(100):
            if not pid_of(name):
                break
            time.sleep(0.05)
        else:
            os.killpg(pid, signal.SIGKILL)
    try:
        os.unlink(os.path.join(RUN, name + ".pid"))
    except FileNotFoundError:
        pass
    return 0


def main(argv):
    args = [a for a in argv if not a.startswith("-")]
    verb, names = (args[0], args[1:]) if args else ("", [])
    if verb == "daemon-reload":
        return 0
    code = 0
    for name in names:
        name = name if "." in name else name + ".service"
        if verb in ("start", "stop", "restart"):
            if verb != "start":
                stop(name)
            code = code or (start(name) if verb != "stop" else 0)
        elif verb == "is-active":
            print("active" if pid_of(name) else "inactive")
            code = code or (0 if pid_of(name) else 3)
        elif verb in ("enable", "disable"):
            os.makedirs(WANTS, exist_ok=True)
            link = os.path.join(WANTS, name)
            if verb == "enable" and not os.path.lexists(link):
                os.symlink(unit_file(name) or name, link)
            if verb == "disable" and os.path.lexists(link):
                os.unlink(link)
        elif verb == "is-enabled":
            if unit_file(name) is None:
                print("not-found")
                code = code or 4
            else:
                enabled = os.path.lexists(os.path.join(WANTS, name))
                print("enabled" if enabled else "disabled")
                code = code or (0 if enabled else 1)
        else:
            print(f"systemctl stand-in: {verb} is not implemented", file=sys.stderr)
            return 1
    return code


sys.exit(main(sys.argv[1:]))
'''


def _sshd_config(port: int) -> str:
    return "\n".join([
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {HOST_KEY}",
        "PidFile /run/vmlab-sandbox-sshd.pid",
        "AuthorizedKeysFile .ssh/authorized_keys",
        "UsePAM no",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UseDNS no",
        "PrintMotd no",
        "AllowTcpForwarding yes",
        "MaxStartups 100:30:200",
        f"Subsystem sftp {SFTP_SERVER}",
        "LogLevel VERBOSE",
        "",
    ])


def _mnt_ns(pid: int | str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


class Sandbox:
    """One throwaway root host (see the module docstring). `layers`: upper dirs kept from earlier sandboxes, the
    newest first; `share`: test-machine paths bind-mounted read only; `port`: sshd's port (default: a free one).
    Attributes: `host`, `port`, `pid` (the holder), `tmp` (the temp dir), `upper`, `log_path` (sshd's log)."""

    host = "127.0.0.1"

    def __init__(self, layers: Sequence[Path] = (), share: Sequence[str] = (), port: int | None = None) -> None:
        self.layers = [Path(p) for p in layers]
        self.share = list(share)
        self.port = port or free_port()
        self.tmp = Path(tempfile.mkdtemp(prefix="vmlab-sandbox-"))
        self.upper = self.tmp / "upper"
        self.log_path = self.tmp / "sshd.log"
        self.pid = 0
        self._holder: subprocess.Popen[bytes] | None = None
        self._sshd: subprocess.Popen[bytes] | None = None

    # -- life cycle -------------------------------------------------------------------------------------------
    def start(self) -> Sandbox:
        mask, work, root = self.tmp / "mask", self.tmp / "work", self.tmp / "root"
        for d in (mask, self.upper, work, root):
            d.mkdir()
        for rel, mode in MASKED.items():
            d = mask / rel
            d.mkdir(parents=True)
            d.chmod(mode)
            os.setxattr(d, "trusted.overlay.opaque", b"y")
        # the bake's secret scan reads the whole disk: keep it to what a builder has, not this machine's trees
        ignore = mask / "etc/vmlab/scan-ignore"
        ignore.parent.mkdir(parents=True)
        ignore.write_text("".join(f"{p}\n" for p in self.scan_ignore()))
        for rel, text, mode in [("usr/local/bin/systemctl", SYSTEMCTL, 0o755),
                                (SSHD_CONFIG.lstrip("/"), _sshd_config(self.port), 0o644)]:
            f = self.upper / rel
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(text)
            f.chmod(mode)
        # overlayfs refuses a lower layer below another one on the same file system (ELOOP): the mask and the
        # layers are copied into a tmpfs of the namespace, only `/` stays on disk
        lowers = self.tmp / "lowers"
        lowers.mkdir()
        copies = [lowers / f"layer{i}" for i in range(len(self.layers))]
        lower = ":".join(str(p) for p in [*copies, lowers / "mask", Path("/")])
        script = [
            "set -e",
            f'mount -t tmpfs -o mode=0755 vmlab-sandbox "{lowers}"',
            f'cp -a "{mask}" "{lowers}/mask"',
            *[f'cp -a "{src}" "{dst}"' for src, dst in zip(self.layers, copies, strict=True)],
            f'mount -t overlay overlay -o "lowerdir={lower},upperdir={self.upper},workdir={work}" "{root}"',
            f'mount --rbind /proc "{root}/proc"',
            f'mount --rbind /dev "{root}/dev"',
            f'mkdir -p "{root}/run/sshd"',
        ]
        for path in self.share:
            script += [f'mkdir -p "{root}{path}"', f'mount --bind "{path}" "{root}{path}"',
                       f'mount -o remount,bind,ro "{root}{path}"']
        script += ["echo ready", f'exec chroot "{root}" /bin/sleep infinity']
        self._holder = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", "\n".join(script)],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        start_new_session=True)
        assert self._holder.stdout is not None
        if self._holder.stdout.readline().strip() != b"ready":
            err = self._holder.stderr.read().decode() if self._holder.stderr else ""
            self.stop()
            raise RuntimeError(f"sandbox did not start: {err}")
        self.pid = self._holder.pid
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{self.pid}/root") == "/":  # until the holder has chrooted
            if time.monotonic() > deadline:
                raise RuntimeError("sandbox holder did not chroot")
            time.sleep(0.005)
        return self

    def scan_ignore(self) -> list[str]:
        """This machine's folders a builder would not have (everything at the top but /etc, /var and what is
        masked; in /var all but tmp and log) and the shared paths: the secret scan in the sandbox skips them."""
        keep = {"etc", "var", "proc", "dev", "sys", "run", *(rel for rel in MASKED if "/" not in rel)}
        out = [f"/{name}" for name in sorted(os.listdir("/")) if name not in keep]
        out += [f"/var/{name}" for name in sorted(os.listdir("/var")) if name not in ("tmp", "log")]
        return out + list(self.share)

    def stop(self, keep: Path | None = None) -> None:
        """Kill everything in the sandbox (its mounts go with the last process) and delete the temp dir;
        `keep` moves the upper dir (all the sandbox wrote) there first, as a layer for a later sandbox."""
        holder, self._holder = self._holder, None
        if holder is not None:
            ns = _mnt_ns(holder.pid)
            for _ in range(3):  # processes may fork while being killed
                for entry in Path("/proc").iterdir():
                    if entry.name.isdigit() and int(entry.name) != os.getpid() and ns and _mnt_ns(entry.name) == ns:
                        try:
                            os.kill(int(entry.name), signal.SIGKILL)
                        except ProcessLookupError:
                            pass
            holder.wait(timeout=10)
            for stream in (holder.stdout, holder.stderr):
                if stream is not None:
                    stream.close()
        if self._sshd is not None:
            self._sshd.wait(timeout=10)
            self._sshd = None
        try:
            if keep is not None and self.upper.exists():
                self.upper.rename(keep)
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- inside -----------------------------------------------------------------------------------------------
    def path(self, inside: str) -> Path:
        """A path inside the sandbox, as seen (and writable) from the test process."""
        return Path(f"/proc/{self.pid}/root") / inside.lstrip("/")

    def _enter(self, *argv: str) -> list[str]:
        return ["nsenter", f"--target={self.pid}", "--mount", "--root", "--wd", *argv]

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """Run a command inside the sandbox (as root) and return its result."""
        return subprocess.run(self._enter(*argv), capture_output=True, text=True, stdin=subprocess.DEVNULL)

    def install_keys(self, host_private_key: str | None, authorized_key: str) -> None:
        """What cloud-init does with the user data and the key pair: the host key (a new one when the user data
        brings none) and root's authorized key."""
        keys = [(AUTHORIZED_KEYS, authorized_key.strip() + "\n")]
        if host_private_key is not None:
            keys.append((HOST_KEY, host_private_key))
        else:
            self.path(HOST_KEY).unlink(missing_ok=True)
            made = self.run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", HOST_KEY)
            assert made.returncode == 0, made.stderr
        for inside, text in keys:
            f = self.path(inside)
            f.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            f.write_text(text)
            f.chmod(0o600)

    def start_sshd(self, timeout: float = 10.0) -> None:
        """Start sshd inside and wait for its banner."""
        with self.log_path.open("ab") as log:
            self._sshd = subprocess.Popen(self._enter(SSHD_BIN, "-D", "-e", "-f", SSHD_CONFIG),
                                          stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            wait_for_banner(self.host, self.port, timeout)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n--- sshd log ---\n{self.log_path.read_text(errors='replace')}") from None


@contextmanager
def lab_port_turn(port: int = 8888, wait: float = 600) -> Iterator[None]:
    """Hold the machine-wide turn to run a lab on 127.0.0.1:`port` while the block runs.

    A sandbox shares the test machine's network (it has only its own mount namespace), and `vmlab up` probes the
    lab's JupyterLab on the record's `jupyter_port`, which is always 8888 (as on a real VM, where it is alone):
    so a flow that starts a lab in a sandbox cannot move to a free port. Concurrent runs take turns through an
    flock instead of colliding; a port held by something else fails at once with what holds it.
    """
    path = Path(tempfile.gettempdir()) / f"vmlab-tests-lab-port-{port}.lock"
    with open(path, "a+") as fh:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"another test run held {path} for {wait:.0f} s") from None
                time.sleep(0.5)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: TIME-WAIT is fine
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError as exc:
                    raise RuntimeError(f"127.0.0.1:{port} is in use outside the test runs ({exc}); the lab flow "
                                       f"needs it: stop what listens there") from None
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
