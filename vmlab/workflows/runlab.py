"""`vmlab run`: send a workdir to a running lab, run a command there detached (vmlab.workflows.runjob), follow its
output, fetch its outputs, and stop or remove the lab afterwards when asked.

The lab must be running: `vmlab up NAME` first, or `vmlab run NAME --up ...`, which launches it through `up`'s
own code (vmlab.cli.upflags) after every check of the run's input (`check_run`). With --down-after, a lab this run
launched is removed also when the run fails before its command starts. What ends the local `vmlab` early (Ctrl-C,
SIGTERM, a connection that does not come back) leaves the command running on the lab and the lab as it is,
whatever --stop-after or --down-after say: stopping it would kill the command. `vmlab run --attach NAME` follows
it again, fetches its outputs and honours --stop-after/--down-after given then. --max-hours (the lab agent's hard
stop) still applies.

Example::

    job = check_run(Path("."), ["results/"])             # BadInput here: nothing made
    result = run_on_lab(LabStore(), "gpu", ["python", "train.py"], job, env={"WANDB_API_KEY": key},
                        write=sys.stdout.write, say=print, after="stop")
    sys.exit(result.rc)
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmlab.errors import BadInput, VmlabError
from vmlab.interrupts import ctrl_c_ignored
from vmlab.providers import provider_for
from vmlab.providers.base import Provider
from vmlab.state import LabRecord, LabStore, check_name
from vmlab.workflows import outputs as outputs_mod
from vmlab.workflows import runjob, workdir
from vmlab.workflows.connect import connect_instance
from vmlab.workflows.labpower import down, power, require_record
from vmlab.workflows.sentfiles import SentFiles

if TYPE_CHECKING:
    from vmlab.transport.ssh import SSHConnection

Say = Callable[[str], None]
WORK = "work"
_FOLDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass
class RunResult:
    lab: str
    run: str
    rc: int
    uploaded: list[str] = field(default_factory=list)
    #: local files read (hashed) to decide what to send: on a second run of an unchanged tree, 0
    hashed: int = 0
    fetched: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    after: str | None = None
    #: the lab was launched by this run (`--up`)
    launched: bool = False

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def remote_folder_name(local: Path) -> str:
    """The name of the lab's copy of `local` (under ~/work): its own name when plain, else "workdir"."""
    name = local.resolve().name
    return name if _FOLDER_NAME.match(name) else "workdir"


@dataclass(frozen=True)
class RunInput:
    """The checked input of a run: its workdir, scanned (after `scanned_at_ns`), and its output paths."""

    workdir_path: Path
    outputs: list[str]
    files: dict[str, workdir.LocalFile]
    scanned_at_ns: int


def check_run(workdir_path: Path, outputs: Sequence[str]) -> RunInput:
    """BadInput for an output path that leaves the workdir or a workdir that is no folder; nothing is made."""
    checked = outputs_mod.check_paths(outputs)
    scanned_at = time.time_ns()
    return RunInput(workdir_path, checked, workdir.scan(workdir_path), scanned_at)


def is_running(store: LabStore, name: str) -> bool:
    """Whether lab `name` is recorded here and its provider says it runs (`run --up` then launches nothing)."""
    record = store.get(check_name(name))
    if record is None:
        return False
    inst = provider_for(record).describe(record.instance_id)
    return inst is not None and inst.state == "running"


def _connect(provider: Provider, record: LabRecord) -> SSHConnection:
    inst = provider.describe(record.instance_id)
    if inst is None or inst.state != "running":
        raise BadInput(f"lab {record.name} is {inst.state if inst else 'gone'}, not running",
                       f"start it with `vmlab up {record.name}` (or add --up), then run again")
    return connect_instance(provider, inst, Path(record.key_file), record.host_key, timeout=60.0)


def _state_of(provider: Provider, record: LabRecord) -> Callable[[], str]:
    """The lab's state as its provider sees it ("unknown" when the provider cannot be asked now)."""
    def state() -> str:
        try:
            inst = provider.describe(record.instance_id)
        except VmlabError:
            return "unknown"
        return inst.state if inst is not None else "gone"

    return state


def _finish(store: LabStore, name: str, provider: Provider, record: LabRecord, after: str | None,
            say: Say) -> None:
    if after == "stop":
        inst = power(provider, store, record, "stop")
        say(f"lab {name} is {inst.state} (--stop-after)")
    elif after == "down":
        down(provider, name, store=store, say=say)


def run_on_lab(store: LabStore, name: str, argv: Sequence[str], job: RunInput, *, env: Mapping[str, str],
               write: Callable[[str], None], say: Say, after: str | None = None,
               progress: workdir.Progress | None = None, on_start: Callable[[str], None] = lambda _id: None,
               launched: bool = False) -> RunResult:
    """Upload, run, follow, fetch; then `after` ("stop" or "down") once the command has ended. `on_start` gets
    the run id once the command runs on the lab (from then on, an interrupt leaves it running). `launched`: this
    run launched the lab, so with after="down" it is removed also when the run fails before the command starts
    (forced: the lab holds nothing of the user's yet)."""
    record = require_record(store, name)
    provider = provider_for(record)
    started: list[str] = []
    try:
        with _connect(provider, record) as conn:
            home = runjob.home(conn)
            remote = f"{home}/{WORK}/{remote_folder_name(job.workdir_path)}"
            memory = SentFiles.open(store, name, record.instance_id, job.workdir_path, remote)
            with memory.locked():
                upload = workdir.upload(conn, job.files, remote, memory, job.outputs, progress, job.scanned_at_ns)
            say(f"sent {len(upload.sent)} changed file(s) of {upload.considered} to {name}:{remote} "
                f"({upload.hashed} read to decide)")
            run = runjob.start(conn, argv, env, workdir=remote, outputs=job.outputs, home_dir=home)
            started.append(run.id)
            on_start(run.id)
            say(f"run {run.id} started on {name}; Ctrl-C detaches (it keeps running: `vmlab run --attach {name}`)")
            result = _complete(conn, run, name, job.workdir_path, write, say, _state_of(provider, record))
    except BaseException:
        if launched and after == "down" and not started:
            with ctrl_c_ignored():
                say(f"removing lab {name}, launched by this run (--down-after)")
                down(provider, name, store=store, force=True, say=say)
        raise
    result.uploaded, result.hashed, result.launched = upload.sent, upload.hashed, launched
    _finish(store, name, provider, record, after, say)
    result.after = after
    return result


def attach(store: LabStore, name: str, *, workdir_path: Path, write: Callable[[str], None], say: Say,
           after: str | None = None, on_start: Callable[[str], None] = lambda _id: None,
           run_id: str | None = None) -> RunResult:
    """Follow run `run_id` (default: the newest) on lab `name` from the start of its log, fetch its outputs, then
    `after`."""
    record = require_record(store, name)
    provider = provider_for(record)
    with _connect(provider, record) as conn:
        run = runjob.find_run(conn, runjob.home(conn), run_id)
        on_start(run.id)
        say(f"attached to run {run.id} on {name}")
        result = _complete(conn, run, name, workdir_path, write, say, _state_of(provider, record))
    _finish(store, name, provider, record, after, say)
    result.after = after
    return result


def runs(store: LabStore, name: str) -> list[runjob.RunInfo]:
    """The runs on lab `name` (`vmlab run --list`), the oldest first."""
    record = require_record(store, name)
    with _connect(provider_for(record), record) as conn:
        return runjob.list_runs(conn, runjob.home(conn))


def _complete(conn: SSHConnection, run: runjob.Run, name: str, workdir_path: Path, write: Callable[[str], None],
              say: Say, state: Callable[[], str]) -> RunResult:
    rc = runjob.follow(conn, run, write, say=say, lab=name, lab_state=state)
    result = RunResult(name, run.id, rc)
    if run.outputs:
        fetched = outputs_mod.download(conn, run.workdir, run.outputs, workdir_path)
        result.fetched, result.skipped, result.missing = fetched.files, fetched.skipped, fetched.missing
        say(f"fetched {len(fetched.files)} output file(s) ({fetched.bytes} bytes) into {workdir_path}")
        if fetched.skipped:
            say(f"not fetched (symlinks, outside the run's folder or under .git): {', '.join(fetched.skipped)}")
        if fetched.missing:
            say(f"no such output on the lab: {', '.join(fetched.missing)}")
    say(f"run {run.id} exited with {rc}")
    return result
