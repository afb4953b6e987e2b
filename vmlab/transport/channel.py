"""Running one command on an open paramiko session channel: stdin in, both output streams out, exit status.

Shared by `SSHConnection` (its direct connection) and the connection master (`master.py`); kept apart from
`ssh.py` so that a run whose commands all go through a master never imports paramiko (~0.3 s of start-up).

Example::

    chan = transport.open_session()
    chan.exec_command("wc -c")
    result = collect(chan, b"hello", "lab", "wc -c")      # RunResult(0, "5\n", "")
"""

from __future__ import annotations

import logging
import select
import threading

import paramiko

from vmlab.engine.command import RunResult
from vmlab.errors import HostError

log = logging.getLogger("vmlab.transport")

READ_CHUNK = 1 << 16
# stdin up to this size is written before reading output: it always fits the channel window, so the write
# cannot block; larger stdin gets a writer thread so a command echoing it back cannot deadlock against us.
INLINE_STDIN = 16 << 10
# OSError covers socket errors and EOFError-like closes from paramiko's send path.
CHANNEL_ERRORS = (paramiko.SSHException, EOFError, OSError)


def collect(chan: paramiko.Channel, stdin: bytes, name: str, what: str) -> RunResult:
    """Feed `stdin` to the command started on `chan` and read both streams until it ends, without ever
    blocking on one stream. HostError (naming `what` on `name`) when the connection is lost meanwhile."""
    writer: threading.Thread | None = None
    if len(stdin) <= INLINE_STDIN:
        _feed(chan, stdin)
    else:
        writer = threading.Thread(target=_feed, args=(chan, stdin), name=f"stdin-{name}",
                                  daemon=True)
        writer.start()
    out: list[bytes] = []
    err: list[bytes] = []
    fd = chan.fileno()  # a pipe paramiko signals on data, EOF or close of either stream
    while True:
        progressed = False
        while chan.recv_stderr_ready():
            err.append(chan.recv_stderr(READ_CHUNK))
            progressed = True
        if chan.recv_ready():
            out.append(chan.recv(READ_CHUNK))
            progressed = True
        if progressed:
            continue
        if chan.eof_received or chan.closed:
            break
        select.select([fd], [], [], 1.0)
        if not chan.get_transport().is_active():  # type: ignore[union-attr]
            break
    # Exit status follows EOF on the wire; closure (also on a dead transport) sets the event too.
    while not chan.status_event.wait(1.0):
        if not chan.get_transport().is_active():  # type: ignore[union-attr]
            break
    if writer is not None:
        writer.join(timeout=5.0)
    stdout = b"".join(out).decode("utf-8", errors="replace")
    stderr = b"".join(err).decode("utf-8", errors="replace")
    rc = chan.exit_status
    if rc == -1:
        transport = chan.get_transport()
        if transport is None or not transport.is_active():
            raise HostError(f"connection to {name} was lost while running: {what}",
                            "the command may or may not have finished; check the host, then run it again")
        # sshd sends exit-signal instead of exit-status for a killed command; paramiko ignores it.
        rc = 255
        stderr += "\n(vmlab: the command ended without an exit status; probably killed by a signal)"
    return RunResult(rc, stdout, stderr)


def _feed(chan: paramiko.Channel, data: bytes) -> None:
    """Send stdin then EOF. A command that exits without reading closes the channel under us: not an error."""
    try:
        if data:
            chan.sendall(data)
        chan.shutdown_write()
    except (OSError, EOFError, paramiko.SSHException) as exc:
        log.debug("stdin not fully consumed: %s", exc)
