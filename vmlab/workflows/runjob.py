"""A command run to completion on a lab (`vmlab run`), detached from the SSH connection that started it.

Each run has a folder on the lab, `~/.vmlab-runs/ID/` (0700): `argv.json`, `meta.json` (the folder it runs in,
its outputs), `env.json` (the environment variables passed from the caller, written over SFTP with mode 0600 and
deleted by the runner once read: values never ride on a command line), `log` (its stdout and stderr), `pid` and,
when it ends, `rc`. `~/.vmlab-runs/last` names the newest run, the one `vmlab run --attach NAME` follows
(`--attach NAME RUN_ID` follows another; `vmlab run --list NAME` lists them).

The runner (RUNNER, a small Python program) is started with `setsid` and its standard streams on files, so a
dropped connection, a closed laptop or a killed `vmlab` leaves it running; it starts the command through a login
shell (`sh -lc 'exec "$@"'`, so the lab's PATH applies), forwards SIGTERM/SIGINT to it, and writes its exit
status (128 + N when killed by signal N). `follow` reads the log from an offset, so a reconnect resumes where it
left off.

Example::

    run = start(conn, ["python", "train.py"], {"WANDB_API_KEY": key}, workdir="/home/admin/work/proj",
                outputs=["results/"])
    rc = follow(conn, run.folder, sys.stdout.write)
"""

from __future__ import annotations

import base64
import codecs
import json
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vmlab.engine.command import Command, sh
from vmlab.errors import BadInput, HostError

if TYPE_CHECKING:
    from vmlab.transport.ssh import SSHConnection

RUNS = ".vmlab-runs"
RUN_ID = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")

RUNNER = r"""
import json, os, signal, subprocess, sys
run = sys.argv[1]
def path(name):
    return os.path.join(run, name)
def write(name, text):
    with open(path(name + ".tmp"), "w") as fh:
        fh.write(text)
    os.replace(path(name + ".tmp"), path(name))
argv = json.load(open(path("argv.json")))
meta = json.load(open(path("meta.json")))
env = dict(os.environ)
if os.path.exists(path("env.json")):
    with open(path("env.json")) as fh:
        env.update(json.load(fh))
    os.unlink(path("env.json"))
log = open(path("log"), "ab", buffering=0)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
try:
    child = subprocess.Popen(["sh", "-lc", 'exec "$@"', "vmlab-run", *argv], cwd=meta["workdir"], env=env,
                             stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
except OSError as exc:
    log.write(("vmlab: cannot start the command: %s\n" % exc.strerror).encode())
    write("rc", "127")
    sys.exit(0)
del env
write("pid", str(child.pid))
for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, lambda number, _frame: child.send_signal(number))
rc = child.wait()
write("rc", str(128 - rc if rc < 0 else rc))
"""

LAUNCH = r"""
cd "$1" || exit 1
setsid python3 "$1/runner.py" "$1" </dev/null >>"$1/runner.log" 2>&1 &
echo $! > "$1/runner.pid"
printf '%s\n' "$2" > "$1/../last.tmp" && mv -f "$1/../last.tmp" "$1/../last"
"""

# Waits up to $3 seconds for the log of run folder $1 to grow past offset $2 or the run to end; prints one JSON
# object: the new bytes (base64, at most 1 MiB), the next offset, the exit status (null while running) and whether
# the runner is still alive.
POLL = r"""
import base64, json, os, sys, time
run, offset, wait = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
def rc():
    try:
        return int(open(os.path.join(run, "rc")).read())
    except (OSError, ValueError):
        return None
def alive():
    try:
        os.kill(int(open(os.path.join(run, "runner.pid")).read()), 0)
        return True
    except (OSError, ValueError):
        return False
def size():
    try:
        return os.path.getsize(os.path.join(run, "log"))
    except OSError:
        return 0
deadline = time.time() + wait
while size() <= offset and rc() is None and time.time() < deadline:
    time.sleep(0.1)
running = alive()  # before rc(): a runner that ends in between has written rc by the time it is gone
status = rc()
data = b""
if size() > offset:
    with open(os.path.join(run, "log"), "rb") as fh:
        fh.seek(offset)
        data = fh.read(1 << 20)
print(json.dumps({"data": base64.b64encode(data).decode(), "next": offset + len(data), "rc": status,
                  "more": size() > offset + len(data), "alive": running}))
"""

# Lists the run folders under $1: [[id, exit status or null, runner alive, argv], ...] (one JSON document).
LIST_RUNS = r"""
import json, os, sys
root, out = sys.argv[1], []
def read(run, name):
    try:
        with open(os.path.join(root, run, name)) as fh:
            return fh.read()
    except OSError:
        return None
def started(run):  # argv.json is written once, at the start (ids of one second sort by their random part)
    try:
        return os.stat(os.path.join(root, run, "argv.json")).st_mtime_ns
    except OSError:
        return 0
for run in sorted(os.listdir(root) if os.path.isdir(root) else [], key=lambda run: (started(run), run)):
    if not os.path.isdir(os.path.join(root, run)):
        continue
    try:
        rc = int(read(run, "rc"))
    except (TypeError, ValueError):
        rc = None
    try:
        os.kill(int(read(run, "runner.pid")), 0)
        alive = True
    except (TypeError, ValueError, OSError):
        alive = False
    try:
        argv = json.loads(read(run, "argv.json"))
    except (TypeError, ValueError):
        argv = []
    out.append([run, rc, alive, argv])
print(json.dumps(out))
"""


@dataclass(frozen=True)
class Run:
    """A run on a lab: its id, its folder and the folder it runs in (absolute paths on the lab)."""

    id: str
    folder: str
    workdir: str
    outputs: tuple[str, ...]


def env_values(names: Sequence[str], environ: Mapping[str, str]) -> dict[str, str]:
    """The caller's values of `names` (`--env KEY`); BadInput for a bad name or one that is not set."""
    values = {}
    for name in names:
        if not ENV_NAME.match(name):
            raise BadInput(f"--env {name!r} is not an environment variable name",
                           "give the name only (e.g. --env WANDB_API_KEY); the value is read from your shell")
        if name not in environ:
            raise BadInput(f"--env {name}: {name} is not set in this shell", f"export {name}=... first")
        values[name] = environ[name]
    return values


def home(conn: SSHConnection) -> str:
    result = conn.execute(Command("pwd", label="find the lab user's home"))
    path = result.stdout.strip()
    if result.rc != 0 or not path.startswith("/"):
        raise HostError(f"cannot find the home folder of the lab user: {result.stderr.strip()[-200:]}")
    return path


def start(conn: SSHConnection, argv: Sequence[str], env: Mapping[str, str], *, workdir: str,
          outputs: Sequence[str], home_dir: str) -> Run:
    """Start `argv` detached in `workdir` on the lab with `env` added; returns the run."""
    run_id = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)
    folder = f"{home_dir}/{RUNS}/{run_id}"
    made = conn.execute(Command("mkdir", "-p", "-m", "700", f"{home_dir}/{RUNS}", folder))
    if made.rc != 0:
        raise HostError(f"cannot make the run folder {folder} on the lab: {made.stderr.strip()[-200:]}")
    conn.put(json.dumps(list(argv)).encode(), f"{folder}/argv.json", mode=0o600)
    conn.put(json.dumps({"workdir": workdir, "outputs": list(outputs)}).encode(), f"{folder}/meta.json", mode=0o600)
    if env:
        conn.put(json.dumps(dict(env)).encode(), f"{folder}/env.json", mode=0o600)
    conn.put(RUNNER.encode(), f"{folder}/runner.py", mode=0o600)
    launched = conn.execute(sh(LAUNCH, folder, run_id, label="start the run"))
    if launched.rc != 0:
        raise HostError(f"cannot start the run on the lab: {launched.stderr.strip()[-300:]}")
    return Run(run_id, folder, workdir, tuple(outputs))


def find_run(conn: SSHConnection, home_dir: str, run_id: str | None = None) -> Run:
    """Run `run_id` on the lab, or the newest one (for `--attach`); BadInput when there is none."""
    runs = f"{home_dir}/{RUNS}"
    if run_id is None:
        found = conn.execute(sh('cat "$1/last"', runs, label="find the last run"))
        run_id = found.stdout.strip()
        if found.rc != 0 or not RUN_ID.match(run_id):
            raise BadInput("no run to attach to on this lab", "start one with `vmlab run NAME -- COMMAND`")
    elif not RUN_ID.match(run_id):
        raise BadInput(f"{run_id!r} is not a run id (they look like 20250101-120000-a1b2c3)",
                       "see the lab's runs with `vmlab run --list NAME`")
    folder = f"{runs}/{run_id}"
    meta = conn.execute(Command("cat", f"{folder}/meta.json"))
    if meta.rc != 0:
        raise BadInput(f"no run {run_id} on this lab", "see the lab's runs with `vmlab run --list NAME`")
    try:
        data = json.loads(meta.stdout)
        return Run(run_id, folder, str(data["workdir"]), tuple(str(p) for p in data["outputs"]))
    except (ValueError, KeyError, TypeError):
        raise HostError(f"run {run_id} on the lab has no readable meta.json") from None


@dataclass(frozen=True)
class RunInfo:
    """A run as `vmlab run --list` shows it: "running", "exited" (with its exit code) or "lost" (its runner
    is gone without an exit status: the lab restarted)."""

    id: str
    state: str
    rc: int | None
    started: str
    argv: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "state": self.state, "rc": self.rc, "started": self.started, "argv": list(self.argv)}


def list_runs(conn: SSHConnection, home_dir: str) -> list[RunInfo]:
    """Every run on the lab, the oldest first."""
    listed = conn.execute(Command("python3", "-c", LIST_RUNS, f"{home_dir}/{RUNS}", label="list runs"))
    if listed.rc != 0:
        raise HostError(f"cannot list the runs on the lab: {listed.stderr.strip()[-300:]}")
    runs = []
    for run_id, rc, alive, argv in json.loads(listed.stdout):
        if not RUN_ID.match(str(run_id)):
            continue  # not a run folder vmlab made
        state = "exited" if rc is not None else "running" if alive else "lost"
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.strptime(str(run_id)[:15], "%Y%m%d-%H%M%S"))
        runs.append(RunInfo(str(run_id), state, rc if isinstance(rc, int) else None, started,
                            tuple(str(a) for a in argv) if isinstance(argv, list) else ()))
    return runs  # in the order they started


def follow(conn: SSHConnection, run: Run, write: Callable[[str], None], *, reconnect_for: float = 60.0,
           say: Callable[[str], None] = lambda _m: None, lab: str = "NAME",
           lab_state: Callable[[], str] = lambda: "running") -> int:
    """Stream the run's log through `write` until it ends; returns its exit status. A lost connection is
    reopened for up to `reconnect_for` seconds, then HostError (the run keeps going on the lab); while it is
    lost, `lab_state()` is asked, and a lab no longer running (a spot interruption, the agent's time limit or
    idle stop) ends the follow at once with HostError."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    offset, lost_since = 0, None
    while True:
        try:
            result = conn.execute(Command("python3", "-c", POLL, run.folder, str(offset), "2", label="read the log"))
        except HostError as exc:
            now = time.monotonic()
            if lost_since is None:
                lost_since = now
                say(f"connection lost ({exc.message}); reconnecting, the command keeps running on the lab")
            state = lab_state()
            if state in ("stopping", "stopped", "terminated", "gone"):
                raise HostError(f"lab {lab} is {state}: run {run.id} ended with it (a spot interruption, "
                                "--max-hours or an idle stop); what the lab's agent synced before is in its bucket",
                                f"see `vmlab status {lab}`; `vmlab up {lab}` and `vmlab run --attach {lab}` "
                                "show its log") from None
            if now - lost_since > reconnect_for:
                raise HostError(f"lost the connection to lab {lab} for {reconnect_for:.0f}s; run {run.id} keeps "
                                "running there", f"follow it again with `vmlab run --attach {lab}`") from None
            time.sleep(1.0)
            continue
        if lost_since is not None:
            say("reconnected")
            lost_since = None
        if result.rc != 0:
            raise HostError(f"cannot read the log of run {run.id}: {result.stderr.strip()[-300:]}")
        state = json.loads(result.stdout)
        write(decoder.decode(base64.b64decode(state["data"])))
        offset = int(state["next"])
        if state["rc"] is not None and not state["more"]:
            write(decoder.decode(b"", final=True))
            return int(state["rc"])
        if state["rc"] is None and not state["alive"] and not state["more"]:
            raise HostError(f"run {run.id} ended without an exit status (the lab restarted, or its runner was "
                            "killed)", f"see {run.folder}/runner.log on the lab (`vmlab ssh {lab}`)")
