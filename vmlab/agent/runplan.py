"""What `vmlab-agent run` will do, worked out and checked before anything starts: the command (CMD, or the
JupyterLab command of vmlab.agent.jupyter), its environment, the sync (or none) and the idle watcher (or none).
Every bad value (a sync variable, two stores named, a missing command, a short JUPYTER_TOKEN) is BadInput here,
before the restore downloads anything.

Example::

    plan = entry_plan(jupyter=False, port=None, ip=None, folder=None, idle_minutes=None,
                      command=["python", "train.py"], setup=setup)
    Supervisor(plan.argv, plan.env, sync=plan.sync, idle=plan.idle).run()
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmlab.agent.daemon import SyncOptions
from vmlab.agent.saladenv import ContainerEnv, Redact
from vmlab.errors import BadInput

log = logging.getLogger("vmlab.agent")
SYNC_NAMES = "VMLAB_SYNC_URL, AWS_S3_BUCKET_FOLDER, AZURE_CONTAINER_URL, GOOGLE_BUCKET_FOLDER"


@dataclass
class Plan:
    argv: list[str]
    env: dict[str, str] = field(repr=False)
    sync: SyncOptions | None = None
    idle: Callable[[Callable[[str], None]], Any] | None = None


def _executable(name: str, env: dict[str, str]) -> None:
    """BadInput unless `name` is a program the child will find (on its PATH) and may run."""
    if shutil.which(name, path=env.get("PATH", os.defpath)) is None:
        raise BadInput(f"command not found: {name!r}", "give an installed program (or its path) after `--`")


def entry_plan(jupyter: bool, port: int | None, ip: str | None, folder: Path | None, idle_minutes: float | None,
               command: list[str], setup: Callable[..., Any], environ: dict[str, str] | None = None) -> Plan:
    """The plan (see the module docstring). `setup` builds the SyncOptions (vmlab.agent.cli's, shared with
    `vmlab-agent sync`)."""
    from vmlab.agent.config import AgentConfig
    from vmlab.agent.deletes import DeletePolicy

    env = dict(os.environ if environ is None else environ)
    config = AgentConfig.from_env(env)
    container = ContainerEnv.load(env, config.state_dir)
    for handler in logging.getLogger().handlers:
        handler.addFilter(Redact(container.secrets))
    folder = (folder or config.data_dir).expanduser().absolute()
    child_env = dict(container.child_env)
    shown_token, token_file, url = "", None, ""
    if jupyter:
        from vmlab.agent.jupyter import jupyter_command

        launch = jupyter_command(env, config.state_dir, port, ip, folder)
        argv = [*launch.argv, *command]
        child_env.update(launch.env)
        shown_token, token_file, url = launch.show_token, launch.token_file, launch.url
    else:
        if not command:
            raise BadInput("no command given", "vmlab-agent run -- CMD [ARGS...], or vmlab-agent run --jupyter")
        if port or ip:
            raise BadInput("--port and --ip go with --jupyter", "drop them, or add --jupyter")
        _executable(command[0], child_env)  # checked now; run by its own name (argv[0] matters to some)
        argv = command
    sync = None
    if container.sync_url:
        key = container.store_env.get("GOOGLE_APPLICATION_CREDENTIALS")
        if key:
            os.environ["GOOGLE_APPLICATION_CREDENTIALS"] = key  # google-auth reads the process environment
        sync = setup(folder, container.sync_url, None, (), DeletePolicy(), None)
        log.info("%s is synced with %s (from %s)", folder, sync.store.url, container.source)
    else:
        log.warning("no sync variable set (%s): running without sync, %s is not saved anywhere", SYNC_NAMES, folder)
    folder.mkdir(parents=True, exist_ok=True)
    if shown_token:
        # the one place the token appears: this line, once (jupyter-server itself shows it as "...")
        print(f"JupyterLab (its token, shown this once): {url}/lab?token={shown_token}", file=sys.stderr, flush=True)
    return Plan(argv, child_env, sync, _idle(config, idle_minutes, url, token_file))


def run_deadline(deadline: float, max_s: float, now: float) -> float:
    """The hard stop of this run: VMLAB_DEADLINE while it is ahead; else (none given, or one from an earlier
    start of the same container, whose environment does not change) `max_s` (VMLAB_MAX_HOURS) from now; 0 none.

    Example: `run_deadline(0, 3600, 1000.0)` is 4600.0; `run_deadline(9000, 3600, 1000.0)` is 9000."""
    if deadline > now:
        return deadline
    return now + max_s if max_s else 0.0


def _idle(config: Any, idle_minutes: float | None, url: str, token_file: Path | None) -> Any:
    """The idle watcher (vmlab.agent.idle), or None when no limit is set."""
    from vmlab.agent import idle

    minutes = config.idle_minutes if idle_minutes is None else idle_minutes
    deadline = run_deadline(config.deadline, config.max_hours * 60 * config.minute_s, time.time())
    if not minutes and not deadline:
        return None
    limits = idle.Limits(idle_s=minutes * config.minute_s, deadline=deadline,
                         warn_s=idle.WARN_MINUTES * config.minute_s)
    local = url.replace("//0.0.0.0:", "//127.0.0.1:").replace("//[::]:", "//[::1]:")
    jupyter = idle.Jupyter(local, token_file) if token_file is not None else None
    log.info("idle stop after %.0f s unused", limits.idle_s)

    def watch(stop: Callable[[str], None]) -> None:
        idle.watch(limits, lambda: idle.look(jupyter), poweroff=stop, warn=lambda text: log.warning("%s", text),
                   interval_s=max(0.05, config.minute_s / 4))

    return watch
