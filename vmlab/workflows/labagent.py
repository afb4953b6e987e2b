"""The lab side of the on-VM agent: the settings `vmlab up` sends it, and the status `ls`/`status`/`down` read back.

At every `up`, /etc/vmlab/agent.env (root-only, never baked: the bake's scrub removes /etc/vmlab/*.env) gets the
sync URL, the idle limit and a deadline of now + max-hours; then the agent's units are restarted so they read it
(restore first, before JupyterLab). The settings are kept in the lab's record, so a later `vmlab up NAME` without
flags keeps them (and starts a new max-hours period).

Defaults: `--idle 30m` (an unused GPU costs the most), `--max-hours 24` (the hard stop the Terraform launcher
had); `0` turns either off. Example::

    settings = AgentSettings.from_flags(idle="30m", max_hours=24, sync="s3://my-bucket/alice")
    write_agent_env(conn, settings, user="ubuntu", now=time.time())
    status = read_status(conn)          # AgentStatus, or None when the agent wrote none
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vmlab import lab, syncurl
from vmlab.agent.status import AgentStatus
from vmlab.engine.command import Command, sh
from vmlab.engine.host import Host
from vmlab.errors import BadInput, HostError
from vmlab.safetext import unsafe_char
from vmlab.state import AgentSection
from vmlab.syncurl import redact

DEFAULT_IDLE_MINUTES = 30.0
DEFAULT_MAX_HOURS = 24.0
MAX_HOURS_LIMIT = 24.0 * 31
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+)s)?$")

# $1: the env file; the content on stdin (it may hold a storage credential, never on a command line)
WRITE_ENV = r"""
umask 077
mkdir -p "$(dirname "$1")"
cat > "$1.tmp" && mv -f "$1.tmp" "$1"
"""
# the agent's units that exist on this image, restarted in order ($@); prints the names of those it lacks (an
# image baked without the agent)
RESTART_UNITS = r"""
for unit in "$@"; do
  if systemctl cat "$unit" >/dev/null 2>&1; then
    systemctl restart "$unit" || { echo "$unit failed: see journalctl -u $unit" >&2; exit 1; }
  else
    echo "$unit"
  fi
done
"""


def parse_idle(text: str) -> float:
    """Minutes from "30m", "1h", "1h30m", "90s" or a bare number of minutes; "0" turns the idle stop off."""
    raw = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", raw):
        return float(raw)
    match = _DURATION.match(raw)
    if not raw or not match or not any(match.groups()):
        raise BadInput(f"--idle {text!r} is not a duration", "use e.g. 30m, 2h, 1h30m, or 0 to turn it off")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return hours * 60 + minutes + seconds / 60


def check_max_hours(hours: float) -> float:
    if hours < 0 or hours > MAX_HOURS_LIMIT:
        raise BadInput(f"--max-hours {hours:g} is out of range",
                       f"give 0 (no limit) up to {MAX_HOURS_LIMIT:.0f} hours, e.g. --max-hours 24")
    return hours


def check_sync_url(url: str) -> str:
    """The URL (stripped) when the agent can sync with it; BadInput otherwise (the rules: vmlab.syncurl)."""
    url = url.strip()
    syncurl.parse(url, "--sync")
    return url


@dataclass(frozen=True)
class AgentSettings:
    idle_minutes: float = DEFAULT_IDLE_MINUTES
    max_hours: float = DEFAULT_MAX_HOURS
    sync_url: str | None = None

    @classmethod
    def from_flags(cls, idle: str | None = None, max_hours: float | None = None, sync: str | None = None,
                   previous: AgentSection | None = None) -> AgentSettings:
        """Validate the flags; a flag not given keeps the lab's previous value (from its record), else the
        default. `--sync ""` turns sync off."""
        previous = previous or AgentSection()
        minutes = parse_idle(idle) if idle is not None else \
            (previous.idle_minutes if previous.idle_minutes is not None else DEFAULT_IDLE_MINUTES)
        hours = check_max_hours(max_hours if max_hours is not None
                                else previous.max_hours if previous.max_hours is not None else DEFAULT_MAX_HOURS)
        url = previous.sync_url if sync is None else (check_sync_url(sync) if sync.strip() else None)
        return cls(minutes, hours, url)

    def section(self) -> AgentSection:
        """What the lab's record keeps of these settings (`record.agent = settings.section()`)."""
        return AgentSection(self.idle_minutes, self.max_hours, self.sync_url)

    def env_text(self, now: float) -> str:
        """agent.env's text. The data folder is not in it: the agent's units name the recipe's folder
        (Environment=VMLAB_DATA_DIR), and a value here would override it (EnvironmentFile= wins)."""
        deadline = int(now + self.max_hours * 3600) if self.max_hours else 0
        # the URL may come from an older record: checked again here, where a line break would add a variable
        url = self.sync_url or ""
        if bad := unsafe_char(url):
            raise BadInput(f"the lab's sync URL {redact(url)!r} contains {bad}", "set it again with --sync")
        lines = [
            "# written by `vmlab up` at every launch; read by the vmlab-agent units (EnvironmentFile=)",
            f"VMLAB_SYNC_URL={url}",
            f"VMLAB_IDLE_MINUTES={self.idle_minutes:g}",
            f"VMLAB_MAX_HOURS={self.max_hours:g}",
            f"VMLAB_DEADLINE={deadline}",
        ]
        return "\n".join(lines) + "\n"

    def describe(self) -> str:
        parts = [f"idle stop after {self.idle_minutes:g} min" if self.idle_minutes else "no idle stop",
                 f"hard stop after {self.max_hours:g} h" if self.max_hours else "no time limit",
                 f"syncing ~/{lab.DATA_DIR} with {redact(self.sync_url)}" if self.sync_url else "no sync"]
        return ", ".join(parts)


def write_agent_env(conn: Host, settings: AgentSettings, user: str, now: float) -> None:
    """Write agent.env (root-only) on the lab and restart the agent's restore unit (so ~/data is there before
    JupyterLab restarts). Raises HostError when a step fails."""
    _sudo(conn, sh(WRITE_ENV, lab.AGENT_ENV_FILE, stdin=settings.env_text(now), label="write agent settings"))
    _sudo(conn, sh(RESTART_UNITS, lab.RESTORE_SERVICE, label="restore the data folder"))


def restart_agent(conn: Host) -> list[str]:
    """Restart the sync and idle units (after JupyterLab), so they read the new settings. Returns the agent units
    this image lacks."""
    missing = _sudo(conn, sh(RESTART_UNITS, lab.SYNC_SERVICE, lab.IDLE_SERVICE, label="restart the lab agent"))
    return missing.split()


def missing_agent_warning(settings: AgentSettings, missing: list[str]) -> str:
    """What to tell the user when the image lacks a unit the settings need ("" when nothing is lost)."""
    lost = []
    if lab.IDLE_SERVICE in missing and (settings.idle_minutes or settings.max_hours):
        lost.append("the idle stop and time limit")
    if lab.SYNC_SERVICE in missing and settings.sync_url:
        lost.append("sync")
    if not lost:
        return ""
    return (f"warning: this image has no vmlab agent ({', '.join(missing)}), so {' and '.join(lost)} will not "
            "happen; bake it again from recipes/lab.py")


def _sudo(conn: Host, command: Command) -> str:
    result = conn.execute(command, sudo=True)
    if result.rc != 0:
        raise HostError(f"`{command.describe()}` failed on the lab (exit {result.rc}): "
                        f"{result.stderr.strip()[-300:]}", "see `vmlab ssh NAME -- journalctl -b`")
    return str(result.stdout)


# stop the sync daemon if this image has it: SIGTERM makes it push what is pending and write its final status
# and print the lab's clock before the stop (and "active" when it ran), so a status from before it is not trusted
STOP_SYNC = r"""
date +%s
if systemctl is-active --quiet "$1"; then echo active; fi
if systemctl cat "$1" >/dev/null 2>&1; then systemctl stop "$1"; fi
"""


def flush_and_read(conn: Host, path: str = lab.AGENT_STATUS_FILE) -> AgentStatus | None:
    """Stop the sync daemon (it pushes everything pending first) and read its final status. A status that is
    not a stopped agent's, or (when the agent was running) was written before this stop, is marked `stale`:
    it counts as unsynced, since the agent died or never wrote what it pushed at the end."""
    out = _sudo(conn, sh(STOP_SYNC, lab.SYNC_SERVICE, label="stop the sync agent (it pushes what is pending)"))
    status = read_status(conn, path)
    if status is not None:
        status.stale = judge_stale(status, out)
    return status


def judge_stale(status: AgentStatus, stop_output: str) -> bool:
    """Whether `status` is not the final one of the stop that printed `stop_output` (see STOP_SYNC).

    Example: `judge_stale(AgentStatus(stopped=False), "1700000000\n")` is True."""
    lines = stop_output.split()
    try:
        started = float(lines[0])
    except (IndexError, ValueError):
        started = 0.0
    if not status.stopped:
        return True
    # the clock printed has whole seconds; allow that second
    return "active" in lines[1:] and status.updated < started - 1


def read_status(conn: Host, path: str = lab.AGENT_STATUS_FILE) -> AgentStatus | None:
    """The agent's status file on the lab, or None when there is none (no sync configured, or an old image)."""
    result = conn.execute(Command("cat", path, label="read agent status"), sudo=True)  # the lab user's, 0600
    if result.rc != 0:
        return None
    return AgentStatus.parse(result.stdout)


def check_can_remove(name: str, status: AgentStatus | None, force: bool, served: str = "") -> None:
    """Refuse to terminate a lab whose agent reports data not yet in its bucket, unless forced. `served`: for a
    lab its provider serves (stopped by the check), how to get its agent syncing again."""
    if force or status is None or not status.unsynced:
        return
    wait = served or f"wait and check `vmlab status {name}`"
    raise HostError(f"lab {name} has data not yet synced to {status.url or 'its bucket'} "
                    f"({status.summary()})", f"{wait}, or `vmlab down {name} --force` to lose it")
