"""`vmlab-agent idle`: power the lab off when nobody uses it, and at its hard deadline whatever happens.

Every few seconds it looks at what counts as use:
- Jupyter (REST API on the VM's loopback, token from /etc/vmlab/jupyter.env): `/api/status` `last_activity`
  (notebook edits, kernel messages, terminal input, API calls from a browser), kernels whose `execution_state` is
  busy, and open terminals. A kernel connection alone does not count (an idle kernel behind a forgotten tab
  would keep a GPU running) unless `--count-connections`; a JupyterLab page polling the API does show up in
  `last_activity`. vmlab's own requests carry `no_track_activity=1`, so looking never counts as use.
- interactive SSH sessions (`who` lines on a pts: logins with a terminal; `vmlab tunnel`'s `ssh -N` is no login,
  its traffic shows up as Jupyter activity instead; a console login does not count),
- GPU utilisation above 10% (`nvidia-smi`, when present): a training script run with nohup.

After VMLAB_IDLE_MINUTES without any, it runs `systemctl poweroff` (EC2 then stops the instance and keeps its
disk; systemd stops the sync daemon first, which pushes what is pending). At VMLAB_DEADLINE it powers off
regardless, after a `wall` message 10 minutes before. The decision is the pure function `decide`.

Example::

    vmlab-agent idle                       # reads /etc/vmlab/agent.env through systemd's EnvironmentFile=
    VMLAB_IDLE_MINUTES=30 VMLAB_DEADLINE=$(date -d '+24 hours' +%s) vmlab-agent idle --poweroff-command true
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vmlab.agent.config import read_env_file

log = logging.getLogger("vmlab.agent")

WARN_MINUTES = 10
GPU_BUSY_PERCENT = 10


@dataclass
class Activity:
    """One look at the lab. `jupyter_last`: unix time of Jupyter's last activity (None: Jupyter did not
    answer)."""

    jupyter_last: float | None = None
    busy_kernels: int = 0
    kernel_connections: int = 0
    terminals: int = 0
    ssh_sessions: int = 0
    gpu_percent: float = 0.0
    errors: list[str] = field(default_factory=list)

    def in_use(self, count_connections: bool = False) -> str:
        """Why the lab is in use right now ("" if nothing is)."""
        reasons = []
        if self.busy_kernels:
            reasons.append(f"{self.busy_kernels} busy kernel(s)")
        if self.terminals:
            reasons.append(f"{self.terminals} open terminal(s)")
        if self.ssh_sessions:
            reasons.append(f"{self.ssh_sessions} SSH session(s)")
        if self.gpu_percent >= GPU_BUSY_PERCENT:
            reasons.append(f"GPU at {self.gpu_percent:.0f}%")
        if count_connections and self.kernel_connections:
            reasons.append(f"{self.kernel_connections} kernel connection(s)")
        return ", ".join(reasons)


@dataclass(frozen=True)
class Limits:
    """`idle_s` (0: never stop for idleness), `deadline` (unix time, 0: none), `warn_s` (warn this long before
    the deadline)."""

    idle_s: float = 0.0
    deadline: float = 0.0
    warn_s: float = WARN_MINUTES * 60.0


@dataclass(frozen=True)
class Decision:
    action: str  # "wait", "warn" or "poweroff"
    reason: str = ""


def effective_deadline(deadline: float, max_hours_s: float, boot_time: float) -> float:
    """The hard stop for this boot. `vmlab up` writes now + max-hours; a deadline from before this boot belongs
    to an earlier run (the lab was stopped, then started with `vmlab start` or the console), so this boot gets
    a period of its own, counted from boot, instead of powering off at once."""
    if not deadline or deadline > boot_time:
        return deadline
    return boot_time + max_hours_s if max_hours_s else 0.0


def boot_time() -> float:
    """Unix time this machine booted (now minus /proc/uptime)."""
    try:
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return time.time() - uptime


def last_active(previous: float, now: float, activity: Activity, count_connections: bool = False) -> float:
    """The newest moment the lab was known in use: now when something is in use, else Jupyter's own record."""
    latest = previous
    if activity.in_use(count_connections):
        latest = now
    if activity.jupyter_last is not None:
        latest = max(latest, min(activity.jupyter_last, now))
    return latest


def decide(now: float, last_used: float, limits: Limits, warned: bool) -> Decision:
    """What to do now. The deadline wins over everything; idleness counts from `last_used`.

    Example: `decide(1000, 0, Limits(idle_s=600), warned=False).action == "poweroff"`.
    """
    if limits.deadline:
        left = limits.deadline - now
        if left <= 0:
            return Decision("poweroff", "the lab reached its time limit (--max-hours)")
        if left <= limits.warn_s and not warned:
            return Decision("warn", f"vmlab: this lab powers off in {_minutes(left)} (its time limit); "
                                    "save your work, or relaunch with `vmlab up` to start a new period")
    if limits.idle_s:
        idle = now - last_used
        if idle >= limits.idle_s:
            return Decision("poweroff", f"the lab was idle for {_minutes(idle)} (--idle)")
    return Decision("wait")


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


# ---- looking at the lab ---------------------------------------------------------------------------------------

class Jupyter:
    """Jupyter's REST API at `url` with `token` (read from `env_file` at each look, since `vmlab up` rewrites
    it)."""

    def __init__(self, url: str, env_file: Path, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.env_file = env_file
        self.timeout = timeout

    def _get(self, path: str, token: str) -> object:
        request = urllib.request.Request(f"{self.url}{path}?no_track_activity=1",
                                         headers={"Authorization": f"token {token}"})
        with urllib.request.urlopen(request, timeout=self.timeout) as answer:
            return json.loads(answer.read())

    def look(self, activity: Activity) -> None:
        try:
            token = read_env_file(self.env_file).get("JUPYTER_TOKEN", "")
        except OSError as e:
            activity.errors.append(f"cannot read the Jupyter token: {e}")
            return
        try:
            status = self._get("/api/status", token)
            kernels = self._get("/api/kernels", token)
            terminals = self._get("/api/terminals", token)
        except (OSError, ValueError, urllib.error.URLError) as e:
            activity.errors.append(f"Jupyter at {self.url} did not answer: {e}")
            return
        if isinstance(status, dict) and status.get("last_activity"):
            activity.jupyter_last = parse_time(str(status["last_activity"]))
        for kernel in kernels if isinstance(kernels, list) else []:
            if kernel.get("execution_state") == "busy":
                activity.busy_kernels += 1
            activity.kernel_connections += int(kernel.get("connections") or 0)
        activity.terminals = len(terminals) if isinstance(terminals, list) else 0


def parse_time(text: str) -> float:
    """Jupyter's ISO 8601 UTC times ("2026-11-24T19:38:20.123456Z") as unix time."""
    when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.timestamp()


def count_logins(who_output: str) -> int:
    """SSH logins in `who` output: sessions on a pseudo-terminal (a console login, e.g. a VM's serial console
    with autologin, is no sign of use)."""
    return sum(1 for line in who_output.splitlines() if len(line.split()) > 1 and line.split()[1].startswith("pts/"))


def gpu_percent(nvidia_smi_output: str) -> float:
    """The busiest GPU's utilisation from `nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits`."""
    values = []
    for line in nvidia_smi_output.splitlines():
        try:
            values.append(float(line.strip()))
        except ValueError:
            continue
    return max(values, default=0.0)


def _output(argv: Sequence[str]) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def look(jupyter: Jupyter | None) -> Activity:
    activity = Activity()
    if jupyter is not None:
        jupyter.look(activity)
    who = _output(["who"])
    activity.ssh_sessions = count_logins(who or "")
    smi = _output(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"])
    activity.gpu_percent = gpu_percent(smi or "")
    return activity


# ---- the loop -------------------------------------------------------------------------------------------------

def watch(limits: Limits, observe: Callable[[], Activity], poweroff: Callable[[str], None],
          warn: Callable[[str], None], interval_s: float, count_connections: bool = False,
          clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> Decision:
    """Look every `interval_s` until a decision is to power off; then call `poweroff(reason)` and return it."""
    used = clock()  # a lab just started (or restarted) gets a full idle period
    warned = False
    reported_errors: set[str] = set()
    while True:
        now = clock()
        activity = observe()
        for error in set(activity.errors) - reported_errors:
            log.warning("%s", error)
        reported_errors = set(activity.errors)
        used = last_active(used, now, activity, count_connections)
        decision = decide(now, used, limits, warned)
        if decision.action == "warn":
            warn(decision.reason)
            warned = True
        elif decision.action == "poweroff":
            log.warning("powering off: %s", decision.reason)
            poweroff(decision.reason)
            return decision
        sleep(interval_s)
