"""`vmlab ssh-config`: `ssh NAME` (and VS Code Remote-SSH) for every lab, with its key and pinned host key."""

from __future__ import annotations

import click

from vmlab.cli.output import Output, handle_errors, json_option
from vmlab.errors import BadInput


@click.command(name="ssh-config")
@click.option("--install", is_flag=True, help="Also add one `Include` line for it to ~/.ssh/config (once).")
@json_option
@handle_errors
def ssh_config(install: bool, json_mode: bool) -> None:
    """Write one SSH `Host` entry per lab into a file vmlab owns; run it again after `vmlab up` or `down`.

    A lab whose record holds a value unsafe to write (a line break in its user name, say) is left out and the
    command exits 2 naming it; the other labs are written.

    \b
    Example:
      vmlab ssh-config --install && ssh lab
    """
    from vmlab.workflows import sshconfig

    out = Output(json_mode)
    result = sshconfig.write_config()
    if install:
        sshconfig.install(result)
    out.say(f"wrote {len(result.hosts)} lab(s) to {result.path}: {', '.join(result.hosts) or 'none'}")
    if result.skipped:
        out.say(f"skipped (no address; stopped?): {', '.join(result.skipped)}")
    if result.user_config is None:
        out.say(f"use it with `ssh -F {result.path} NAME`, or add it to ~/.ssh/config with --install")
    elif result.included:
        out.say(f"added `Include {result.path}` to {result.user_config}")
    else:
        out.say(f"{result.user_config} already includes it")
    if result.refused:
        raise BadInput(f"left out lab(s) {', '.join(result.refused)} (the others were written): "
                       + "; ".join(result.refused.values()))
    out.emit(result.to_json())
