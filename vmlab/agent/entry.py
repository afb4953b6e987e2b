"""`vmlab-agent run -- CMD...`: the entrypoint of a vmlab container image (docker run, Kubernetes, SaladCloud).

In order: restore the data folder from the store, start the sync (vmlab.agent.daemon's loop, in a thread of this
process: one process to stop, one log, and the final push shares the grace period with CMD's own stop), then
start CMD as a child in its own process group (not exec: the agent outlives it to push what it wrote last).

- SIGTERM, SIGINT or SIGHUP: the same signal goes to CMD, which gets half the grace period
  to exit (then SIGKILL to its whole group); the sync keeps running meanwhile, then pushes what is pending in what
  is left of the grace period (less a second), and the agent exits with CMD's code. SIGUSR1/SIGUSR2 are passed on.
- CMD exits by itself: the same push, then its code (128+N when a signal N ended it). Nobody is about to kill
  the container then, so the push takes as long as it needs (a large result on a slow link); a stop signal
  meanwhile gives it what is left of the grace period from that signal. Only a CMD that exited 0 with files left
  unsynced turns into exit 1, so the orchestrator sees it.
- Idle stop (`--idle MINUTES`): vmlab.agent.idle's watcher, as on a VM; at the limit CMD is stopped as above.
- As PID 1 (a container without an init) the agent also reaps orphaned grandchildren.

A push the grace period cut short loses nothing that was written before: the sync's journal lists the paths it
had not sent, and the next start with the same state folder sends them first.

Example::

    code = Supervisor(["jupyter-lab", "--config=..."], env, grace_s=10, sync=options).run()
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vmlab.agent.daemon import SyncOptions
from vmlab.agent.sync import PushResult

log = logging.getLogger("vmlab.agent")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
PASSED_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)
# docker stop's default; Kubernetes gives 30 s (terminationGracePeriodSeconds) and SaladCloud documents none.
DEFAULT_GRACE_S = 10.0


@dataclass
class Supervisor:
    """Runs `command` between a restore and a final push (see the module docstring). `idle`: a function that
    blocks until the lab is unused for too long, then calls the function it is given with the reason (None: no
    idle stop)."""

    command: list[str]
    env: dict[str, str] = field(repr=False)
    grace_s: float = DEFAULT_GRACE_S
    sync: SyncOptions | None = None
    idle: Callable[[Callable[[str], None]], Any] | None = None
    #: CMD's stdin from /dev/null: jupyter-server with a terminal on stdin answers one SIGINT with a question
    stdin_null: bool = False
    stop_signal: int = 0
    reason: str = ""
    #: when a stop signal came (monotonic): the grace period runs from then; None: no signal (yet)
    signalled_at: float | None = None
    result: PushResult | None = None

    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum in PASSED_SIGNALS:
            if self._child is not None and self._child.poll() is None:
                self._child.send_signal(signum)
            return
        if self.signalled_at is None:
            self.signalled_at = time.monotonic()
        if not self.stop_signal:
            self.stop_signal = signum
            self.reason = f"signal {signal.Signals(signum).name}"

    def run(self) -> int:
        self._child: subprocess.Popen[bytes] | None = None
        for signum in (*STOP_SIGNALS, *PASSED_SIGNALS):
            signal.signal(signum, self._on_signal)
        stop_sync = threading.Event()
        thread = self._start_sync(stop_sync) if self.sync is not None else None
        if (thread is not None and not self._wait_ready(thread)) or self.stop_signal:
            return self._finish(thread, stop_sync, 128 + self.stop_signal if self.stop_signal else 1)
        try:
            self._child = subprocess.Popen(self.command, env=self.env, start_new_session=True,
                                           stdin=subprocess.DEVNULL if self.stdin_null else None)
        except OSError as e:
            log.error("cannot start %s: %s", self.command[0], e)
            return self._finish(thread, stop_sync, 127)
        log.info("started %s (pid %d)", self.command[0], self._child.pid)
        if self.idle is not None:
            threading.Thread(target=self.idle, args=(self._idle_stop,), daemon=True, name="idle").start()
        code = self._wait_child(self._child)
        if code is None:
            log.info("%s: stopping %s, then pushing what is pending (%.0f s in all)", self.reason,
                     self.command[0], self.grace_s)
            code = self._stop_child(self._child, time.monotonic() + self.grace_s / 2)
        else:
            log.info("%s exited with %d: pushing what is pending", self.command[0], code)
        return self._finish(thread, stop_sync, code)

    def _left(self) -> float:
        """Seconds left of the grace period, less one to exit in (the grace period runs from the signal)."""
        assert self.signalled_at is not None
        return self.signalled_at + self.grace_s - time.monotonic() - 1.0

    def _idle_stop(self, reason: str) -> None:
        if not self.stop_signal:
            self.reason = reason
            self.stop_signal = signal.SIGTERM

    def _start_sync(self, stop: threading.Event) -> threading.Thread:
        from vmlab.agent.daemon import run as run_daemon

        assert self.sync is not None
        options = self.sync
        self._ready = threading.Event()

        def target() -> None:
            try:
                self.result = run_daemon(options, stop, on_ready=self._ready.set)
            except Exception:  # noqa: BLE001 - told in the log; CMD goes on without sync rather than not at all
                log.exception("the sync stopped")

        thread = threading.Thread(target=target, name="sync", daemon=True)  # a push cut short: the journal
        thread.start()
        return thread

    def _wait_ready(self, thread: threading.Thread) -> bool:
        """Wait for the restore (retried while the store fails); False when a stop signal came first or the sync
        thread died."""
        while not self._ready.wait(0.1):
            if self.stop_signal:
                log.info("%s before the restore finished: not starting the command", self.reason)
                return False
            if not thread.is_alive():
                log.error("the sync stopped before the restore finished: not starting the command")
                return False
        return True

    def _wait_child(self, child: subprocess.Popen[bytes]) -> int | None:
        """CMD's exit code once it exits, or None when a stop was asked first."""
        while not self.stop_signal:
            code = self._poll(child)
            if code is not None:
                return code
            time.sleep(0.05)
        return self._poll(child)

    def _poll(self, child: subprocess.Popen[bytes]) -> int | None:
        if os.getpid() == 1:  # orphans are re-parented to PID 1: reap them, keeping CMD's own status
            while True:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                if pid == child.pid:
                    child.returncode = os.waitstatus_to_exitcode(status)
        code = child.poll()
        return None if code is None else (128 - code if code < 0 else code)

    def _stop_child(self, child: subprocess.Popen[bytes], kill_at: float) -> int:
        try:
            child.send_signal(self.stop_signal)
        except ProcessLookupError:
            pass
        while (code := self._poll(child)) is None and time.monotonic() < kill_at:
            time.sleep(0.05)
        if code is None:
            log.warning("%s did not exit within %.1f s: killing its process group", self.command[0],
                        self.grace_s / 2)
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            child.wait()
            code = self._poll(child)
        assert code is not None
        log.info("%s exited with %d", self.command[0], code)
        return code

    def _finish(self, thread: threading.Thread | None, stop: threading.Event, code: int) -> int:
        """The final push: within the grace period from a stop signal (less a second), else until it is done."""
        if thread is None:
            return code
        assert self.sync is not None
        if self.signalled_at is not None:
            self.sync.flush_s = max(0.5, self._left())
        stop.set()
        while thread.is_alive() and self.signalled_at is None:  # nobody is about to kill the container
            thread.join(timeout=0.1)
        if thread.is_alive():
            thread.join(timeout=max(0.5, self._left()))
        if thread.is_alive():
            log.error("the final push did not finish within the grace period: the journal keeps the paths for "
                      "the next start")
            return code or 1
        if self.result is None:
            log.error("the sync had stopped (see above): changes since then were not pushed")
            return code or 1
        if self.result.pending:
            log.error("%d files not synced", len(self.result.pending))
            return code or 1
        log.info("nothing left to push; exiting with %d", code)
        return code
