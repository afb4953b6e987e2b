"""`vmlab tunnel`: this machine's localhost to the lab's JupyterLab, checked with the token."""

from __future__ import annotations

import time

import click

from vmlab.cli.output import Output, handle_errors, json_option


@click.command()
@click.argument("name", default="lab")
@click.option("--port", default=8888, show_default=True, type=int, help="Local port (the next free one if busy).")
@click.option("--open/--no-open", "open_browser", default=False, help="Open the browser at the lab's URL.")
@click.option("--once", is_flag=True, help="Check the tunnel, print the URL and close (for scripts).")
@json_option
@handle_errors
def tunnel(name: str, port: int, open_browser: bool, once: bool, json_mode: bool) -> None:
    """Forward localhost:PORT to lab NAME's JupyterLab and print its URL; runs until Ctrl-C.

    \b
    Example:
      vmlab tunnel lab --port 8888 --open
    """
    from vmlab.state import LabStore
    from vmlab.workflows.labs import require_record
    from vmlab.workflows.tunnel import open_tunnel

    out = Output(json_mode)
    record = require_record(LabStore(), name)
    t = open_tunnel(record, port, say=out.say)
    out.say(f"JupyterLab of {name}: {t.url}", "bold green")
    out.emit(t.to_json())
    if open_browser:
        import webbrowser

        webbrowser.open(t.url)
    try:
        while not once and t.alive():
            time.sleep(1)
        if not once:
            out.say(f"the tunnel to {name} closed")
    finally:
        t.close()
