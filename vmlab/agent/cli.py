"""The `vmlab-agent` command, run on a lab VM by the systemd units the lab recipe installs. Every setting comes
from the environment first (see vmlab.agent.config: VMLAB_SYNC_URL, VMLAB_DATA_DIR, VMLAB_IDLE_MINUTES,
VMLAB_DEADLINE, ...), so a unit needs only `EnvironmentFile=-/etc/vmlab/agent.env` and one of::

    vmlab-agent restore        # oneshot before JupyterLab: download the bucket's files; exit 0 when no URL is set
    vmlab-agent sync           # restore, then watch and push until SIGTERM (which pushes what is pending)
    vmlab-agent idle           # power off after VMLAB_IDLE_MINUTES unused, and at VMLAB_DEADLINE

In a container image, the entrypoint (restore, sync, CMD as a child, a final push on SIGTERM)::

    vmlab-agent run --jupyter --ip :: --port 8000    # or: vmlab-agent run -- CMD [ARGS...]

By hand::

    vmlab-agent sync --folder ~/data --url s3://my-bucket/alice
    vmlab-agent sync --once                       # restore and push once (VMLAB_SYNC_URL or AWS_S3_BUCKET_FOLDER)
    vmlab-agent release-deletes                   # send the deletes the sync agent held back
"""

from __future__ import annotations

import hashlib
import logging
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from vmlab import lab
from vmlab.errors import VmlabError

if TYPE_CHECKING:  # the agent's modules are imported by each command, so that `--help` stays quick
    from vmlab.agent.daemon import SyncOptions
    from vmlab.agent.sync import PushResult

log = logging.getLogger("vmlab.agent")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def cli() -> None:
    """The vmlab agent on a lab VM: keeps a folder synced with a bucket prefix, and stops the lab when unused.

    \b
    Example:
      vmlab-agent sync --folder ~/data --url s3://my-bucket/alice
    """


def _logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")


def _fail(e: VmlabError) -> None:
    click.echo(f"error: {e}", err=True)
    sys.exit(e.exit_code)


def _setup(folder: Path | None, url: str | None, manifest: Path | None, exclude: tuple[str, ...],
           policy: Any, status_file: Path | None) -> Any:
    """SyncOptions from the flags, with the environment's configuration as defaults; None when no URL is set."""
    from vmlab.agent.config import AgentConfig
    from vmlab.agent.daemon import SyncOptions
    from vmlab.agent.manifest import Excludes, Manifest
    from vmlab.agent.stores import open_store
    config = AgentConfig.from_env()
    url = url or config.sync_url
    if not url:
        return None
    folder = (folder or config.data_dir).expanduser().absolute()
    store = open_store(url)
    name = hashlib.sha256(f"{folder}\0{store.url}".encode()).hexdigest()[:16]
    status_file = status_file or config.status_file
    own = [_anchored(folder, path) for path in (config.state_dir, manifest, status_file) if path is not None]
    return SyncOptions(
        folder=folder, store=store,
        manifest=Manifest.load(manifest or config.state_dir / f"manifest-{name}.json", store.url),
        excludes=Excludes(extra=(*exclude, *(pattern for pattern in own if pattern))),
        policy=policy,
        status_file=status_file,
        queue_file=config.state_dir / f"queue-{name}.jsonl",
        deletes_file=config.state_dir / f"deletes-{name}.json",
    )


def _anchored(folder: Path, path: Path) -> str:
    """An exclude pattern for `path` when it lies inside the synced `folder` (the agent's state dir, manifest or
    status file: a Google key, a JupyterLab token, files rewritten on every push), else "". Example:
    `_anchored(Path("/data"), Path("/data/.state"))` == "/.state"."""
    import glob

    try:
        rel = path.expanduser().resolve().relative_to(folder.resolve())  # the same folder by another name too
    except ValueError:
        return ""
    return "/" + glob.escape(rel.as_posix()) if rel.parts else ""


_folder = click.option("--folder", type=click.Path(file_okay=False, path_type=Path), default=None,
                       help="The folder to keep synced (default: VMLAB_DATA_DIR, else ~/data).")
_url = click.option("--url", help="s3://bucket/prefix, az://account/container/prefix or gs://bucket/prefix "
                    "(default: VMLAB_SYNC_URL, else AWS_S3_BUCKET_FOLDER / AZURE_CONTAINER_URL / "
                    "GOOGLE_BUCKET_FOLDER).")
_manifest = click.option("--manifest", type=click.Path(dir_okay=False, path_type=Path),
                         help="Where to keep the record of synced files (default: under the agent's state dir).")
_exclude = click.option("--exclude", multiple=True, help="Extra shell pattern to leave out (repeatable).")
_status = click.option("--status-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
                       help=f"Status for `vmlab ls` (default: VMLAB_AGENT_STATUS_FILE, else {lab.AGENT_STATUS_FILE} "
                            "when writable).")
_verbose = click.option("-v", "--verbose", is_flag=True, help="Log every pass.")


@cli.command()
@_folder
@_url
@_manifest
@_exclude
def restore(folder: Path | None, url: str | None, manifest: Path | None, exclude: tuple[str, ...]) -> None:
    """Download the bucket's files into FOLDER (never deleting or overwriting a local change), then exit.
    Exits 0 without doing anything when no sync URL is configured, 1 when a key failed.

    \b
    - Nothing is written through a symlink: a key behind one (data/link -> ..) is skipped, named in the log,
      and never deleted from the bucket later.
    - A local copy changed here while the object also changed (or differing with no record of a sync: a stale
      disk) is a conflict: the newer stays, the other is kept as NAME.conflict-HOST-YYYYmmddTHHMMSSZ.EXT and
      both are uploaded.
    - An empty or missing FOLDER while files were synced before is a missing disk: everything is restored.
    - A file name that is not UTF-8 is stored under an escaped key (each bad byte 0xXY as U+F7XY) and
      restored to the same bytes.
    - The summary counts restored / in sync / kept local / skipped / failed / conflicts; temporaries an
      interrupted restore left (.~vmlab-*) are removed first.

    \b
    Example:
      vmlab-agent restore --folder ~/data --url s3://my-bucket/alice
    """
    from vmlab.agent.deletes import DeletePolicy
    from vmlab.agent.queue import replay
    from vmlab.agent.restore import restore as restore_folder

    _logging(True)
    try:
        options = _setup(folder, url, manifest, exclude, DeletePolicy(), None)
        if options is None:
            log.info("no sync URL configured (VMLAB_SYNC_URL): nothing to restore")
            return
        result = restore_folder(options.folder, options.store, options.manifest, options.excludes,
                                local_changes=replay(options.queue_file))
    except VmlabError as e:
        _fail(e)
    log.info("restore from %s: %s", options.store.url, result.summary())
    sys.exit(1 if result.failed else 0)


@cli.command()
@_folder
@_url
@_manifest
@_exclude
@click.option("--once", is_flag=True, help="Restore and push once, then exit.")
@click.option("--no-restore", is_flag=True, help="Do not download from the bucket first.")
@click.option("--quiet", "quiet_s", type=float, default=0.4, show_default=True,
              help="Seconds a file must go without changes before it is pushed.")
@click.option("--reconcile", "reconcile_s", type=float, default=300.0, show_default=True,
              help="Seconds between full passes that catch missed events.")
@click.option("--max-delete-share", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Hold the deletes of a window when they are more than this share of the synced files.")
@click.option("--min-deletes", type=click.IntRange(0), default=10, show_default=True,
              help="Never hold this many deletes or fewer in a window.")
@click.option("--delete-window", "window_s", type=click.FloatRange(1), default=600.0, show_default=True,
              help="Seconds over which deletes are counted together.")
@click.option("--delete-settle", "settle_s", type=click.FloatRange(0), default=3.0, show_default=True,
              help="A delete waits until no new delete was seen for this long, so a burst is judged whole.")
@click.option("--force-deletes", is_flag=True, help="Send every delete at once, held or not.")
@click.option("--check-interval", "check_s", type=click.FloatRange(0), default=60.0, show_default=True,
              help="Seconds between checks (one HEAD) that the bucket still holds the marker object; 0 never.")
@click.option("--imds-interval", "imds_s", type=float, default=5.0, show_default=True,
              help="Seconds between looks for EC2 spot notices (on EC2 only).")
@_status
@_verbose
def sync(folder: Path | None, url: str | None, manifest: Path | None, exclude: tuple[str, ...], once: bool,
         no_restore: bool, quiet_s: float, reconcile_s: float, max_delete_share: float, min_deletes: int,
         window_s: float, settle_s: float, force_deletes: bool, check_s: float, imds_s: float,
         status_file: Path | None, verbose: bool) -> None:
    """Restore FOLDER from the bucket, then upload its changes as they happen (1 PUT per change, no listing).
    SIGTERM pushes what is pending and exits 0. On EC2, a spot interruption or rebalance notice pushes
    everything at once. Exits 0 without doing anything when no sync URL is configured.

    \b
    Deletes: the deletes of the last --delete-window seconds (sent and waiting) are all held when they are
    more than --min-deletes (10) and more than --max-delete-share (0.5) of the synced files; a burst is judged
    whole (--delete-settle), and a full pass finding FOLDER empty holds every delete. Held deletes stay in the
    status (`vmlab status`, `vmlab down` refuses) until `vmlab-agent release-deletes`.
    Every path is re-checked component by component at upload time: nothing behind a symlink is read.
    A file that fails gets its own backoff (1 s to 60 s) and is named in the status; the others go on.
    A same-size edit with its old mtime put back is still seen (ctime and inode are compared).
    If the marker object (.~vmlab-agent-marker) vanishes, the bucket lost its objects: all is uploaded again.
    Restore rules (conflict copies NAME.conflict-HOST-TIME.EXT, escaped keys of non-UTF-8 names, a missing
    disk): see `vmlab-agent restore --help`.

    \b
    Example:
      vmlab-agent sync --folder ~/data --url s3://my-bucket/alice --exclude '*.tmp'
    """
    from vmlab.agent.deletes import DeletePolicy

    _logging(verbose or not once)
    policy = DeletePolicy(max_share=max_delete_share, min_count=min_deletes, window_s=window_s, settle_s=settle_s,
                          force=force_deletes)
    try:
        options = _setup(folder, url, manifest, exclude, policy, status_file)
        if options is None:
            log.warning("no sync URL configured (VMLAB_SYNC_URL): nothing to sync")
            return
        options.quiet_s, options.reconcile_s, options.imds_interval_s = quiet_s, reconcile_s, imds_s
        options.check_s = check_s
        result = _sync_once(options, no_restore) if once else _sync_until_stopped(options, no_restore)
    except VmlabError as e:
        _fail(e)
    sys.exit(1 if result.pending else 0)


def _sync_once(options: SyncOptions, no_restore: bool) -> PushResult:
    """`sync --once`: restore (unless told not to), then one full push with no retry time."""
    from vmlab.agent.daemon import flush
    from vmlab.agent.marker import put_marker
    from vmlab.agent.queue import Pending
    from vmlab.agent.restore import restore as run_restore

    pending = Pending(options.queue_file)
    if not no_restore:
        restored = run_restore(options.folder, options.store, options.manifest, options.excludes,
                               local_changes=pending.journaled())
        click.echo(f"restore from {options.store.url}: {restored.summary()}", err=True)
        put_marker(options.store)  # as the daemon does after its restore: the manifest matches the store
    options.folder.mkdir(parents=True, exist_ok=True)
    options.flush_s = 0
    result = flush(options, pending)
    pending.close()
    return result


def _sync_until_stopped(options: SyncOptions, no_restore: bool) -> PushResult:
    """The daemon, until SIGTERM or SIGINT (then it pushes what is pending)."""
    from vmlab.agent.daemon import run as run_daemon

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        log.info("signal %d: pushing what is pending, then exiting", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return run_daemon(options, stop, restore_first=not no_restore)


@cli.command("release-deletes")
def release_deletes() -> None:
    """Send the deletes the sync agent held back (see `vmlab-agent sync --help`): the running agent sends them
    within a second, or the next one at its start. Only the deletes held now are released, and a file that came
    back is never deleted. Reads the agent's state folder (VMLAB_AGENT_STATE_DIR, else /var/lib/vmlab-agent).

    \b
    Example (on the lab, after checking `vmlab status NAME`):
      sudo /opt/vmlab-agent/bin/vmlab-agent release-deletes
    """
    from vmlab.agent.config import AgentConfig
    from vmlab.agent.deletes import release
    from vmlab.agent.keys import shown

    try:
        config = AgentConfig.from_env()
    except VmlabError as e:
        _fail(e)
    released = [rel for path in sorted(config.state_dir.glob("deletes-*.json")) for rel in release(path)]
    for rel in released[:20]:
        click.echo(f"released: {shown(rel)}")
    click.echo(f"released {len(released)} held deletes")


@cli.command()
@click.option("--jupyter-url", default=f"http://127.0.0.1:{lab.PORT}", show_default=True,
              help="JupyterLab's address on the VM.")
@click.option("--count-connections", is_flag=True,
              help="Count a kernel with a browser tab connected as use (off: an open tab alone lets it stop).")
@click.option("--poweroff-command", envvar="VMLAB_POWEROFF_COMMAND", default="systemctl poweroff",
              show_default=True, help="What to run to stop the lab (env VMLAB_POWEROFF_COMMAND).")
@click.option("--wall-command", envvar="VMLAB_WALL_COMMAND", default="wall", show_default=True,
              help="What to run, with the message as its last argument, to warn logged-in users.")
@click.option("--interval", "interval_s", type=float, default=None,
              help="Seconds between looks (default: a quarter of an agent minute, so 15).")
def idle(jupyter_url: str, count_connections: bool, poweroff_command: str, wall_command: str,
         interval_s: float | None) -> None:
    """Power the lab off after VMLAB_IDLE_MINUTES without use (Jupyter activity, busy kernels, terminals, SSH
    logins, GPU load), and at VMLAB_DEADLINE regardless (warning logged-in users 10 minutes before). Exits 0
    at once when neither is set. VMLAB_AGENT_MINUTE_SECONDS shortens a minute, for tests.

    \b
    Example:
      VMLAB_IDLE_MINUTES=30 vmlab-agent idle
    """
    from vmlab.agent import idle as idle_mod
    from vmlab.agent.config import AgentConfig

    _logging(True)
    try:
        config = AgentConfig.from_env()
    except VmlabError as e:
        _fail(e)
    deadline = idle_mod.effective_deadline(config.deadline, config.max_hours * 60 * config.minute_s,
                                           idle_mod.boot_time())
    limits = idle_mod.Limits(idle_s=config.idle_s, deadline=deadline, warn_s=idle_mod.WARN_MINUTES * config.minute_s)
    if not limits.idle_s and not limits.deadline:
        log.info("no idle limit and no deadline configured: nothing to watch")
        return
    jupyter = idle_mod.Jupyter(jupyter_url, config.jupyter_env)

    def run(command: str, *extra: str) -> None:
        argv = [*shlex.split(command), *extra]
        try:
            subprocess.run(argv, check=False, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            log.error("`%s` failed: %s", shlex.join(argv), e)

    log.info("idle limit %s, deadline %s", f"{config.idle_s:.0f}s" if limits.idle_s else "off",
             f"{limits.deadline:.0f}" if limits.deadline else "off")
    def poweroff(reason: str) -> None:
        run(wall_command, f"vmlab: powering off: {reason}")
        run(poweroff_command)

    idle_mod.watch(limits, lambda: idle_mod.look(jupyter), poweroff=poweroff,
                   warn=lambda message: run(wall_command, message),
                   interval_s=interval_s or max(0.05, config.minute_s / 4), count_connections=count_connections)


@cli.command(context_settings={"allow_interspersed_args": False})
@click.option("--jupyter", is_flag=True,
              help="Run JupyterLab (jupyterhub-singleuser under a hub); COMMAND's words are added to its options.")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help=f"JupyterLab's port (default {lab.PORT}).")
@click.option("--ip", default=None,
              help="JupyterLab's address: 127.0.0.1 (default), 0.0.0.0 (all IPv4) or :: (all IPv6).")
@_folder
@click.option("--grace", "grace_s", type=click.FloatRange(2), envvar="VMLAB_GRACE_SECONDS", default=10.0,
              show_default=True, help="Seconds from SIGTERM to exit: COMMAND gets half, the final push the rest "
              "(env VMLAB_GRACE_SECONDS; set the platform's grace period to at least this).")
@click.option("--idle", "idle_minutes", type=click.FloatRange(0), default=None,
              help="Stop after this many minutes unused (default VMLAB_IDLE_MINUTES; 0 never).")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def run(jupyter: bool, port: int | None, ip: str | None, folder: Path | None, grace_s: float,
        idle_minutes: float | None, command: tuple[str, ...]) -> None:
    """A container's entrypoint: restore the data folder from the store, start the sync, run COMMAND as a child,
    and on SIGTERM/SIGINT stop COMMAND, push what is pending and exit with COMMAND's code, all within --grace
    (COMMAND exiting by itself: the push takes as long as it needs).
    The store comes from VMLAB_SYNC_URL or SaladCloud's names (AWS_S3_BUCKET_FOLDER, AZURE_CONTAINER_URL +
    AZURE_BLOB_SAS_TOKEN, GOOGLE_BUCKET_FOLDER + GOOGLE_APPLICATION_CREDENTIALS); none set: COMMAND just runs.
    With --jupyter, JupyterLab always asks for JUPYTERLAB_PW (hashed) or JUPYTER_TOKEN, else for a fresh token
    printed once here; its readiness probe is GET /api (200 without authentication). See docs/containers.md.

    \b
    Example:
      vmlab-agent run --jupyter --ip 0.0.0.0 --port 8000
      vmlab-agent run -- python train.py --epochs 10
    """
    from vmlab.agent import entry
    from vmlab.agent.runplan import entry_plan

    _logging(True)
    try:
        plan = entry_plan(jupyter, port, ip, folder, idle_minutes, list(command), setup=_setup)
    except VmlabError as e:
        _fail(e)
    sys.exit(entry.Supervisor(plan.argv, plan.env, grace_s=grace_s, sync=plan.sync, idle=plan.idle,
                              stdin_null=jupyter).run())


def main() -> None:
    cli(prog_name="vmlab-agent")
