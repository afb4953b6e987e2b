"""`vmlab tunnel`: this machine's localhost to the lab's JupyterLab, checked with the token."""

from __future__ import annotations

import logging
import signal
import sys
from typing import Any

import click

from vmlab.cli.output import Output, handle_errors, json_option
from vmlab.errors import BadInput


@click.command()
@click.argument("name", default="lab")
@click.option("--port", default=None, type=int,
              help="Local port (default 8888; the next free one if busy). A container lab has its own.")
@click.option("--open/--no-open", "open_browser", default=False,
              help="Open the browser at the lab's URL (through a private redirect file: no token in `ps`).")
@click.option("--once", is_flag=True, help="Check the tunnel, print the URL and close (for scripts).")
@click.option("--extra", type=int, multiple=True, metavar="PORT",
              help="Also forward this port of the lab's loopback (repeatable), e.g. 6006 for TensorBoard.")
@click.option("--backend", type=click.Choice(["openssh", "paramiko"]), default=None,
              help="SSH client carrying the tunnel (default: openssh when `ssh` exists, else paramiko).")
@click.option("--background", is_flag=True,
              help="Detach: keep the tunnel running after the command returns (pid file in vmlab's state dir).")
@click.option("--stop", "stop_it", is_flag=True, help="End the lab's background tunnel.")
@click.option("--detached", is_flag=True, hidden=True)  # set by --background on the process it starts
@json_option
@handle_errors
def tunnel(name: str, port: int | None, open_browser: bool, once: bool, extra: tuple[int, ...], backend: str | None,
           background: bool, stop_it: bool, detached: bool, json_mode: bool) -> None:
    """Forward localhost:PORT to lab NAME's JupyterLab and print its URL; runs until Ctrl-C.

    A dropped connection is reopened within seconds of the lab answering again; a lab that was stopped
    ends the tunnel with a hint.

    \b
    Example:
      vmlab tunnel lab --port 8888 --extra 6006 --open
      vmlab tunnel lab --background    (then `vmlab tunnel lab --stop`)
    """
    from vmlab.state import LabStore
    from vmlab.workflows import tunnel_bg
    from vmlab.workflows.labpower import require_record
    from vmlab.workflows.tunnel import check_port, keep_alive, open_tunnel

    out = Output(json_mode)
    # a refused forward is reported once as the error below, not as a log line per attempt
    logging.getLogger("vmlab.transport").addHandler(logging.NullHandler())
    if port is not None:
        check_port(port)
    for remote in extra:
        check_port(remote, "--extra")
    record = require_record(LabStore(), name)
    if stop_it and (background or once):
        raise BadInput("--stop cannot be combined with --background or --once", f"run `vmlab tunnel {name} --stop`")
    if _served(out, record, port, extra, background, open_browser):
        return
    port = port or 8888
    if stop_it:
        pid = tunnel_bg.stop(name)
        out.say(f"stopped the background tunnel to {name} (pid {pid})" if pid else f"no background tunnel to {name}")
        out.emit({"lab": name, "stopped": pid is not None, "pid": pid})
        return
    if background:
        argv = ["--port", str(port), "--detached", *(a for r in extra for a in ("--extra", str(r)))]
        state = tunnel_bg.start(name, argv + (["--backend", backend] if backend else []))
        _announce(out, name, state)
        out.say(f"running in the background (pid {state['pid']}); end it with `vmlab tunnel {name} --stop`")
        out.emit(state)
        if open_browser:
            _open(name, state["url"])
        return
    # SIGTERM (kill, a service manager) must close the ssh child too, as Ctrl-C does
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(143))
    t = open_tunnel(record, port, extra=extra, backend=backend, say=out.say)
    try:
        if detached:
            tunnel_bg.record_running(name, t.to_json())
        _announce(out, name, t.to_json())
        out.emit(t.to_json())
        if open_browser:
            _open(name, t.url)
        if not once:
            keep_alive(t, say=out.say)
    finally:
        t.close()
        if detached:
            tunnel_bg.forget_running(name)
        elif open_browser:  # with --once too: the page holds the token
            tunnel_bg.TunnelFiles(name).redirect.unlink(missing_ok=True)


def _served(out: Output, record: Any, port: int | None, extra: tuple[int, ...], background: bool,
            open_browser: bool) -> bool:
    """A lab its provider publishes on 127.0.0.1 itself (`ServesLabs`, a container): no tunnel to open; check
    that it answers to its token and print the URL. False for a lab reached over SSH."""
    from vmlab.errors import HostError
    from vmlab.providers import provider_for
    from vmlab.providers.capabilities import ServesLabs
    from vmlab.workflows.servedlab import lab_url, wait_answers

    provider = provider_for(record)
    if not isinstance(provider, ServesLabs):
        return False
    given = [flag for flag, value in (("--port", port), ("--extra", extra), ("--background", background)) if value]
    if given:
        raise BadInput(f"{', '.join(given)} do not apply to lab {record.name}: its provider publishes it on "
                       f"127.0.0.1:{record.port} itself", f"run `vmlab tunnel {record.name}`")
    inst = provider.describe(record.instance_id)
    if inst is None or inst.state != "running":
        raise HostError(f"lab {record.name} is {inst.state if inst else 'gone'}",
                        f"`vmlab start {record.name}`" if inst else f"`vmlab up {record.name}`")
    wait_answers(record, inst, provider, timeout=60.0)  # just started: JupyterLab takes a few seconds
    url = lab_url(record)
    _announce(out, record.name, {"url": url, "extra": []})
    out.emit({"lab": record.name, "local_port": record.port, "url": url, "backend": "provider", "extra": []})
    if open_browser:
        _open(record.name, url)
    return True


def _open(name: str, url: str) -> None:
    """Open the browser at the lab through a private redirect page: a URL with the token on the browser's
    command line would be visible to every local user in `ps`."""
    import webbrowser

    from vmlab.workflows import tunnel_bg

    webbrowser.open(tunnel_bg.redirect_file(name, url).as_uri())


def _announce(out: Output, name: str, state: dict[str, Any]) -> None:
    out.say(f"JupyterLab of {name}: {state['url']}", "bold green")
    for fwd in state["extra"]:
        out.say(f"port {fwd['remote_port']} of {name}: {fwd['url']}")
