"""The three tools of the no-op benchmark as subprocesses: `vmlab provision`, `pyinfra`, `ansible-playbook`.

Each `Tool.run()` applies the same 20-step end state once and returns its wall time and the number of changes
the tool itself reported. The peers live in their own venv, installed from PyPI on first use. Example::

    versions = ensure_peers(Path("/tmp/vmlab-bench-peers"))
    tool = Pyinfra(work, root, inventory, Path("/tmp/vmlab-bench-peers"))
    first = tool.run()          # converge
    again = tool.run()          # no-op: again.changed == 0
"""

from __future__ import annotations

import json
import os
import re
import statistics
import string
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PEERS = BENCH / "peers"
RECIPE = BENCH / "recipe_noop.py"
PEER_REQUIREMENTS = ("pyinfra>=3,<4", "ansible-core>=2.16")


def ensure_peers(venv: Path) -> dict[str, str]:
    """pyinfra and ansible-core in their own venv (created and installed from PyPI on first use); versions."""
    exe = {"pyinfra": venv / "bin" / "pyinfra", "ansible": venv / "bin" / "ansible-playbook"}
    if not all(p.exists() for p in exe.values()):
        print(f"installing {', '.join(PEER_REQUIREMENTS)} into {venv} (first run only) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        *PEER_REQUIREMENTS], check=True)
    r = subprocess.run([str(venv / "bin" / "python"), "-c",
                        "from importlib.metadata import version as v; print(v('pyinfra'), v('ansible-core'))"],
                       capture_output=True, text=True, check=True)
    pyinfra_version, ansible_version = r.stdout.split()
    return {"pyinfra": pyinfra_version, "ansible-core": ansible_version}


def fill(template: str, dest: Path, quote: Callable[[Any], str], **values: Any) -> Path:
    """Write bench/peers/`template` to `dest` with its ${name} placeholders replaced by `quote(value)`."""
    text = string.Template((PEERS / template).read_text()).substitute({k: quote(v) for k, v in values.items()})
    dest.write_text(text)
    return dest


@dataclass
class Run:
    seconds: float
    changed: int | None  # None: the tool's output could not be read
    ok: bool
    output: str = ""
    turns: int | None = None  # round trips the latency proxy saw during the run (None: no proxy)


@dataclass
class ToolResult:
    """Everything measured for one tool; any entry in `problems` makes its numbers not comparable."""

    name: str
    version: str
    units: str  # what one converge applies, e.g. "20 steps"
    converge: Run | None = None
    noops: list[Run] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def noop_median(self) -> float | None:
        return statistics.median(r.seconds for r in self.noops) if self.noops else None


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    return time.perf_counter() - t0, proc


class Tool:
    """One tool applying the end state below `root`; `run()` is one complete CLI invocation."""

    name = ""

    def __init__(self, root: Path) -> None:
        self.root = root

    def run(self) -> Run:
        raise NotImplementedError


class VmlabCLI(Tool):
    """`vmlab provision`; `persist` is VMLAB_SSH_PERSIST (seconds its SSH connection master outlives a run; 0:
    every run connects directly). Named "vmlab" with persistence, "vmlab-direct" without."""

    def __init__(self, work: Path, root: Path, inventory: Path, persist: float) -> None:
        super().__init__(root)
        self.name = "vmlab" if persist > 0 else "vmlab-direct"
        self.inventory = inventory
        # Own state, cache and runtime dirs: nothing from the user's vmlab (known_hosts, caches, connection
        # masters) leaks into the run.
        self.env = {**os.environ, "PYTHONPATH": str(REPO), "VMLAB_STATE_DIR": str(work / "vmlab-state"),
                    "VMLAB_CACHE_DIR": str(work / "vmlab-cache"), "XDG_RUNTIME_DIR": str(work / "run"),
                    "VMLAB_SSH_PERSIST": f"{persist:g}", "NO_COLOR": "1"}

    def run(self) -> Run:
        seconds, proc = timed([sys.executable, "-m", "vmlab", "provision", str(RECIPE), "-i", str(self.inventory),
                               "--json"], self.env, REPO)
        output = proc.stdout + proc.stderr
        try:
            host = json.loads(proc.stdout)["hosts"][0]
        except (ValueError, KeyError, IndexError):
            return Run(seconds, None, False, output)
        ok = proc.returncode == 0 and not host["failed"] and not host["unreachable"]
        return Run(seconds, int(host["changed"]), ok, output)


class Pyinfra(Tool):
    name = "pyinfra"
    # pyinfra 3 logs one status line per operation and host: "[bench-host] Success" when it ran commands,
    # "[bench-host] No changes" when it had nothing to do.
    _CHANGED = re.compile(r"^\s*\[bench-host\]\s+Success\b", re.M)
    _UNCHANGED = re.compile(r"^\s*\[bench-host\]\s+No changes\b", re.M)

    def __init__(self, work: Path, root: Path, inventory: Path, venv: Path) -> None:
        super().__init__(root)
        self.inventory = inventory
        self.exe = venv / "bin" / "pyinfra"
        home = work / "pyinfra-home"  # an empty HOME: no ~/.ssh/config or agent settings of this machine's user
        home.mkdir(exist_ok=True)
        self.env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}", "NO_COLOR": "1",
                    "PYINFRA_PROGRESS": "off", "HOME": str(home)}

    def run(self) -> Run:
        seconds, proc = timed([str(self.exe), "-y", str(self.inventory), str(PEERS / "pyinfra_deploy.py")],
                              self.env, PEERS)
        output = proc.stdout + proc.stderr
        changed = len(self._CHANGED.findall(output))
        seen = changed + len(self._UNCHANGED.findall(output))
        return Run(seconds, changed if seen else None, proc.returncode == 0, output)


class Ansible(Tool):
    name = "ansible"
    _RECAP = re.compile(r"^bench-host\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)

    def __init__(self, work: Path, root: Path, inventory: Path, config: Path, venv: Path) -> None:
        super().__init__(root)
        self.inventory = inventory
        self.exe = venv / "bin" / "ansible-playbook"
        home = work / "ansible-home"
        home.mkdir(exist_ok=True)
        self.env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}",
                    "ANSIBLE_CONFIG": str(config), "ANSIBLE_HOME": str(home), "ANSIBLE_NOCOLOR": "1",
                    "ANSIBLE_LOCAL_TEMP": str(home / "tmp")}

    def run(self) -> Run:
        seconds, proc = timed([str(self.exe), "-i", str(self.inventory), str(PEERS / "playbook.yml")],
                              self.env, PEERS)
        output = proc.stdout + proc.stderr
        m = self._RECAP.search(output)
        if not m:
            return Run(seconds, None, False, output)
        ok = proc.returncode == 0 and m.group(3) == "0" and m.group(4) == "0"
        return Run(seconds, int(m.group(2)), ok, output)


def converge(tool: Tool, result: ToolResult, verify: Callable[[Path], list[str]]) -> bool:
    """The first run on a fresh target: it must change things and leave the expected state. False: skip the
    tool's no-op runs."""
    print(f"  {tool.name}: converge ...", end="", flush=True)
    first = result.converge = tool.run()
    print(f" {first.seconds:.2f}s, changed={first.changed}", flush=True)
    if not first.ok:
        result.problems.append(f"converge run failed:\n{first.output[-3000:]}")
        return False
    if not first.changed:
        result.problems.append("converge run reported no changes (is the target really fresh?)")
    result.problems += [f"after converge: {p}" for p in verify(tool.root)]
    return True


def noop(tool: Tool, result: ToolResult, label: str, turns: Callable[[], int] | None = None) -> bool:
    """One re-apply of the converged target; it must succeed and report zero changes. False: stop the tool.
    `turns` reads the latency proxy's round-trip counter, when there is one."""
    before = turns() if turns else 0
    r = tool.run()
    if turns:
        r.turns = turns() - before
    result.noops.append(r)
    seen = f", round trips={r.turns}" if r.turns is not None else ""
    print(f"  {tool.name}: no-op {label}: {r.seconds:.2f}s, changed={r.changed}{seen}", flush=True)
    if not r.ok:
        result.problems.append(f"no-op run {label} failed:\n{r.output[-3000:]}")
        return False
    if r.changed is None:
        result.problems.append(f"no-op run {label}: could not read the number of changes from the output")
    elif r.changed:
        result.problems.append(f"no-op run {label} reported {r.changed} change(s):\n{r.output[-3000:]}")
    return True
