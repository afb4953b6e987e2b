"""`vmlab run NAME -- COMMAND...`: a command run to completion on a running lab (vmlab.workflows.runlab)."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import click

from vmlab.cli.output import Output, handle_errors, json_option
from vmlab.cli.upflags import UpFlags, up_flag_options

if TYPE_CHECKING:
    from vmlab.state import LabStore
    from vmlab.workflows.runjob import RunInfo
    from vmlab.workflows.workdir import Progress


@click.command()
@click.argument("name")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("--workdir", "workdir_path", default=".", show_default=True, metavar="DIR",
              type=click.Path(file_okay=False, path_type=str),
              help="Folder sent to the lab (only changed files; .vmlabignore/.gitignore excludes) and where "
                   "outputs land.")
@click.option("--outputs", multiple=True, metavar="PATH",
              help="File or folder (relative to DIR) fetched back when the command ends; repeatable.")
@click.option("--env", "env_names", multiple=True, metavar="KEY",
              help="Pass this variable's value from your shell (never on a command line); repeatable.")
@click.option("--stop-after", is_flag=True, help="Stop the lab when the command ends, whatever its exit code.")
@click.option("--down-after", is_flag=True, help="Remove the lab when the command ends, whatever its exit code.")
@click.option("--attach", is_flag=True, help="Follow the lab's newest run (or `--attach NAME RUN_ID` another) "
                                             "again after Ctrl-C or a lost connection, fetch its outputs, exit with "
                                             "its exit code.")
@click.option("--list", "list_runs", is_flag=True, help="List the lab's runs: id, state, exit code, start time, "
                                                       "command.")
@click.option("--up", "launch_first", is_flag=True,
              help="Launch lab NAME first (as `vmlab up`, with its flags below) unless it is running.")
@up_flag_options
@json_option
@handle_errors
def run(name: str, command: tuple[str, ...], workdir_path: str, outputs: tuple[str, ...],
        env_names: tuple[str, ...], stop_after: bool, down_after: bool, attach: bool, list_runs: bool,
        launch_first: bool, flags: UpFlags, json_mode: bool) -> None:
    """Send DIR to running lab NAME, run COMMAND there (detached: it survives a lost connection), stream its
    output, fetch --outputs, exit with its exit code. Ctrl-C detaches and leaves the command and the lab running.
    With --up, the lab is launched first when it is not running (every input checked before); with --down-after
    a lab launched so is removed also when the run fails before the command starts.

    \b
    Example:
      vmlab run gpu --workdir . --outputs results/ --env WANDB_API_KEY --stop-after -- python train.py
      vmlab run gpu --up --provider ec2 --type m+t4 --spot --max-hours 6 --down-after -- python train.py
      vmlab run --attach gpu --down-after
      vmlab run --list gpu
      vmlab run --attach gpu 20250101-120000-a1b2c3
    """
    from pathlib import Path

    from vmlab.errors import BadInput
    from vmlab.state import LabStore
    from vmlab.workflows import runlab
    from vmlab.workflows.runjob import env_values

    out = Output(json_mode)
    after = _after(name, stop_after, down_after, flags, launch_first)
    stream = sys.stderr if json_mode else sys.stdout

    def write(text: str) -> None:
        stream.write(text)
        stream.flush()

    if list_runs:
        if command or outputs or env_names or launch_first or attach or after:
            raise BadInput("--list shows the lab's runs: it takes no COMMAND or other flag",
                           f"use `vmlab run --list {name}` alone")
        _show_runs(out, name, runlab.runs(LabStore(), name))
        return
    started: list[str] = []
    try:
        if attach:
            if len(command) > 1 or outputs or env_names or launch_first:
                raise BadInput("--attach follows a run: it takes a RUN_ID at most, no COMMAND, --outputs, --env "
                               "or --up", f"use `vmlab run --attach {name} [RUN_ID]` (with --workdir, --stop-after "
                               "or --down-after)")
            result = runlab.attach(LabStore(), name, workdir_path=Path(workdir_path), write=write, say=out.say,
                                   after=after, on_start=started.append, run_id=command[0] if command else None)
        else:
            if not command:
                raise BadInput("no command to run", f"give it after --, e.g. `vmlab run {name} -- python train.py`")
            env = env_values(env_names, os.environ)
            job = runlab.check_run(Path(workdir_path), outputs)
            store = LabStore()
            launched = launch_first and _launch(name, flags, out, store)
            result = runlab.run_on_lab(store, name, command, job, env=env, write=write, say=out.say, after=after,
                                       progress=_progress(out), on_start=started.append, launched=launched)
    except KeyboardInterrupt:
        if started:  # before the command started, an interrupt simply ends vmlab
            click.echo(f"vmlab: detached from run {started[0]}; the command keeps running on lab {name} (until it "
                       f"ends) and the lab is left as it is: `vmlab run --attach {name} {started[0]}` follows it "
                       "again and fetches its outputs", err=True)
        raise
    out.emit(result.to_json())
    sys.exit(result.rc)


def _after(name: str, stop_after: bool, down_after: bool, flags: UpFlags, launch_first: bool) -> str | None:
    """What happens to the lab after the run ("stop", "down" or None), the flags checked."""
    from vmlab.errors import BadInput

    if stop_after and down_after:
        raise BadInput("--stop-after and --down-after exclude each other", "choose one")
    if flags.given() and not launch_first:
        raise BadInput(f"{flags.given()[0]} is a launch flag: it applies with --up only",
                       f"add --up to launch lab {name} with it, or drop it")
    return "stop" if stop_after else "down" if down_after else None


def _show_runs(out: Output, name: str, runs: list[RunInfo]) -> None:
    import shlex

    if not runs:
        out.say(f"no runs on lab {name}")
    for r in runs:
        code = "-" if r.rc is None else str(r.rc)
        shown = "".join(c if c.isprintable() else "?" for c in shlex.join(r.argv))  # the lab's data: no escapes
        out.say(f"{r.id}  {r.state:<8} {code:>4}  {r.started}  {shown}")
    out.emit({"lab": name, "runs": [r.to_json() for r in runs]})


def _launch(name: str, flags: UpFlags, out: Output, store: LabStore) -> bool:
    """`--up`: launch (or resume) lab `name` as `vmlab up` does unless it is running; whether it was launched
    new by this run."""
    from vmlab.cli.upflags import launch, prepare
    from vmlab.state import check_name
    from vmlab.workflows.runlab import is_running

    ready = prepare(check_name(name), flags, out)  # the flags checked even when there is nothing to launch
    if is_running(store, name):
        if flags.given():
            out.say(f"lab {name} is running: --up launches nothing, and {', '.join(flags.given())} change nothing")
        return False
    return not launch(ready, out).resumed


def _progress(out: Output) -> Progress | None:
    if out.json_mode or not sys.stderr.isatty():
        return None

    def show(done: int, total: int, sent: int, size: int) -> None:
        click.echo(f"\r  sending {done}/{total} files, {sent}/{size} bytes", nl=False, err=True)
        if done == total:
            click.echo("", err=True)

    return show
