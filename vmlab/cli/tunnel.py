"""`vmlab tunnel`: this machine's localhost to the lab's JupyterLab, checked with the token."""

from __future__ import annotations

import logging
import signal
import sys

import click

from vmlab.cli.output import Output, handle_errors, json_option


@click.command()
@click.argument("name", default="lab")
@click.option("--port", default=8888, show_default=True, type=int, help="Local port (the next free one if busy).")
@click.option("--open/--no-open", "open_browser", default=False, help="Open the browser at the lab's URL.")
@click.option("--once", is_flag=True, help="Check the tunnel, print the URL and close (for scripts).")
@click.option("--extra", type=int, multiple=True, metavar="PORT",
              help="Also forward this port of the lab's loopback (repeatable), e.g. 6006 for TensorBoard.")
@click.option("--backend", type=click.Choice(["openssh", "paramiko"]), default=None,
              help="SSH client carrying the tunnel (default: openssh when `ssh` exists, else paramiko).")
@json_option
@handle_errors
def tunnel(name: str, port: int, open_browser: bool, once: bool, extra: tuple[int, ...], backend: str | None,
           json_mode: bool) -> None:
    """Forward localhost:PORT to lab NAME's JupyterLab and print its URL; runs until Ctrl-C.

    A dropped connection is reopened within seconds of the lab answering again; a lab that was stopped
    ends the tunnel with a hint.

    \b
    Example:
      vmlab tunnel lab --port 8888 --extra 6006 --open
    """
    from vmlab.state import LabStore
    from vmlab.workflows.labs import require_record
    from vmlab.workflows.tunnel import check_port, keep_alive, open_tunnel

    out = Output(json_mode)
    # a refused forward is reported once as the error below, not as a log line per attempt
    logging.getLogger("vmlab.transport").addHandler(logging.NullHandler())
    check_port(port)
    for remote in extra:
        check_port(remote, "--extra")
    record = require_record(LabStore(), name)
    # SIGTERM (kill, a service manager) must close the ssh child too, as Ctrl-C does
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(143))
    t = open_tunnel(record, port, extra=extra, backend=backend, say=out.say)
    try:
        out.say(f"JupyterLab of {name}: {t.url}", "bold green")
        for remote, local in t.extra.items():
            out.say(f"port {remote} of {name}: http://localhost:{local}/")
        out.emit(t.to_json())
        if open_browser:
            import webbrowser

            webbrowser.open(t.url)
        if not once:
            keep_alive(t, say=out.say)
    finally:
        t.close()
