"""One place that prints results and maps errors to exit codes (0 ok, 1 failure, 2 bad input).

Human text by default (rich, colours off when not a TTY or NO_COLOR is set), JSON with --json.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import click

from vmlab.errors import VmlabError

F = TypeVar("F", bound=Callable[..., Any])


class Output:
    """Where a command writes. `json_mode` turns human text off and prints one JSON document at the end."""

    def __init__(self, json_mode: bool) -> None:
        from rich.console import Console

        self.json_mode = json_mode
        no_color = bool(os.environ.get("NO_COLOR")) or not sys.stdout.isatty()
        self.console = Console(no_color=no_color, highlight=False, soft_wrap=True,
                               force_terminal=None if not no_color else False)
        self.err = Console(stderr=True, no_color=no_color, highlight=False, soft_wrap=True)

    def say(self, text: str, style: str | None = None) -> None:
        """A line for humans (suppressed in --json mode, where only the final document is printed)."""
        if not self.json_mode:
            self.console.print(text, style=style, markup=False)

    def emit(self, document: Any) -> None:
        if self.json_mode:
            click.echo(json.dumps(document, indent=2, default=str))
            sys.stdout.flush()  # long-running commands (tunnel) print it before they block


def json_option(f: F) -> F:
    return click.option("--json", "json_mode", is_flag=True, help="Print one JSON document (for scripts).")(f)


def handle_errors(f: F) -> F:
    """Run a command body; a VmlabError becomes one line on stderr (or JSON) and its exit code. SIGTERM and SIGHUP
    interrupt it as Ctrl-C does (vmlab.interrupts), so what it created is removed; the exit code is 128 + signal."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from vmlab.interrupts import signals_interrupt

        json_mode = bool(kwargs.get("json_mode"))
        try:
            with signals_interrupt():
                return f(*args, **kwargs)
        except VmlabError as exc:
            if json_mode:
                click.echo(json.dumps({"error": exc.message, "hint": exc.hint, "exit_code": exc.exit_code}))
            else:
                click.echo(f"vmlab: error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt as exc:
            name = getattr(exc, "signal_name", "SIGINT")
            with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
                click.echo("vmlab: interrupted" + ("" if name == "SIGINT" else f" by {name}"), err=True)
            sys.exit(getattr(exc, "exit_code", 130))

    return wrapper  # type: ignore[return-value]


STYLES = {"ok": "green", "changed": "yellow", "skipped": "cyan", "failed": "bold red"}


def step_reporter(out: Output, check: bool = False) -> Callable[[Any], None]:
    """A runner reporter printing one line per step (thread-safe: hosts run in parallel)."""
    lock = threading.Lock()

    def report(r: Any) -> None:
        with lock:
            word = "would change" if check and r.status == "changed" else r.status
            tag = "handler " if r.handler else ""
            out.say(f"[{r.host}] {word:<12} {tag}{r.index:>2} {r.name}  ({r.elapsed:.2f}s)", STYLES[r.status])
            if check or r.status == "failed":
                for c in r.commands:
                    out.say(f"      $ {c}")
            if r.diff:
                out.say(r.diff.rstrip("\n"))
            if r.error:
                out.say(f"      {r.error}", "red")

    return report


def recap_table(out: Output, recaps: list[Any]) -> None:
    """The per-host recap printed at the end of a run."""
    out.say("")
    out.say(f"{'host':<24} {'ok':>4} {'changed':>8} {'skipped':>8} {'failed':>7} {'time':>8}", "bold")
    for rc in recaps:
        if rc.unreachable:
            out.say(f"{rc.host:<24} UNREACHABLE  {rc.error}", STYLES["failed"])
            continue
        style = STYLES["failed"] if rc.failed else STYLES["changed"] if rc.changed else STYLES["ok"]
        out.say(f"{rc.host:<24} {rc.ok:>4} {rc.changed:>8} {rc.skipped:>8} {rc.failed:>7} {rc.elapsed:>7.2f}s",
                style)
        if rc.error and not rc.results:  # refused by a recipe check before any step
            out.say(f"      {rc.error}", "red")
