"""The `vmlab-agent` command, run on a lab VM (by systemd units the lab recipe installs).

Example::

    vmlab-agent sync --folder ~/data --url s3://my-bucket/alice     # restore, then watch and push until SIGTERM
    vmlab-agent sync --once                                          # restore and push once (AWS_S3_BUCKET_FOLDER)
"""

from __future__ import annotations

import hashlib
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from vmlab import paths
from vmlab.errors import VmlabError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def cli() -> None:
    """The vmlab agent on a lab VM: keeps a folder synced with a bucket prefix.

    \b
    Example:
      vmlab-agent sync --folder ~/data --url s3://my-bucket/alice
    """


@cli.command()
@click.option("--folder", type=click.Path(file_okay=False, path_type=Path), default=Path("~/data"),
              show_default=True, help="The folder to keep synced.")
@click.option("--url", help="s3://bucket/prefix (default: AWS_S3_BUCKET_FOLDER).")
@click.option("--manifest", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to keep the record of synced files (default: under the state dir).")
@click.option("--exclude", multiple=True, help="Extra shell pattern to leave out (repeatable).")
@click.option("--once", is_flag=True, help="Restore and push once, then exit.")
@click.option("--no-restore", is_flag=True, help="Do not download from the bucket first.")
@click.option("--quiet", "quiet_s", type=float, default=0.4, show_default=True,
              help="Seconds a file must go without changes before it is pushed.")
@click.option("--reconcile", "reconcile_s", type=float, default=300.0, show_default=True,
              help="Seconds between full passes that catch missed events.")
@click.option("--max-delete-share", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Hold a batch of deletes larger than this share of the tree.")
@click.option("--force-deletes", is_flag=True, help="Apply deletes even past --max-delete-share.")
@click.option("-v", "--verbose", is_flag=True, help="Log every pass.")
def sync(folder: Path, url: str | None, manifest: Path | None, exclude: tuple[str, ...], once: bool,
         no_restore: bool, quiet_s: float, reconcile_s: float, max_delete_share: float, force_deletes: bool,
         verbose: bool) -> None:
    """Restore FOLDER from the bucket, then upload its changes as they happen. SIGTERM pushes what is pending
    and exits 0.

    \b
    Example:
      vmlab-agent sync --folder ~/data --url s3://my-bucket/alice --exclude '*.tmp'
    """
    from vmlab.agent.daemon import SyncOptions, flush, run
    from vmlab.agent.manifest import Excludes, Manifest
    from vmlab.agent.stores import open_store
    from vmlab.agent.sync import DeletePolicy

    logging.basicConfig(level=logging.INFO if verbose or not once else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    folder = folder.expanduser().absolute()
    try:
        store = open_store(url)
        state = paths.state_dir() / "agent"
        name = hashlib.sha256(f"{folder}\0{store.url}".encode()).hexdigest()[:16]
        options = SyncOptions(
            folder=folder, store=store,
            manifest=Manifest.load(manifest or state / f"manifest-{name}.json", store.url),
            excludes=Excludes(extra=exclude),
            policy=DeletePolicy(max_share=max_delete_share, force=force_deletes),
            quiet_s=quiet_s, reconcile_s=reconcile_s, status_file=state / f"status-{name}.json",
        )
        stop = threading.Event()
        if once:
            from vmlab.agent.daemon import Pending
            from vmlab.agent.sync import restore

            if not no_restore:
                restore(folder, store, options.manifest, options.excludes)
            folder.mkdir(parents=True, exist_ok=True)
            options.flush_s = 0
            result = flush(options, Pending())
        else:
            def on_signal(signum: int, frame: Any) -> None:
                logging.getLogger("vmlab.agent").info("signal %d: pushing what is pending, then exiting", signum)
                stop.set()

            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
            result = run(options, stop, restore_first=not no_restore)
    except VmlabError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    sys.exit(1 if result.pending else 0)


def main() -> None:
    cli(prog_name="vmlab-agent")
