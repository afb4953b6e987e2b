"""Undo what a workflow created: on failure or Ctrl-C everything, newest first; on success only the temporary.

    with Cleanup(say) as cleanup:
        inst = provider.launch(spec)
        cleanup.always(f"builder {inst.id}", lambda: provider.terminate(inst.id))
        image = provider.create_image(...)
        cleanup.on_failure(f"image {image.id}", lambda: provider.delete_image(image.id))

A second Ctrl-C (or SIGTERM, SIGHUP) while cleaning up does not interrupt it: leaking a paid VM is worse than
waiting a moment. An undo that fails is tried again after a pause (`RETRY_DELAYS`): one throttled or failed API
call must not leak the resource it was meant to remove.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType

from vmlab.interrupts import ctrl_c_ignored

Say = Callable[[str], None]

#: seconds to wait before each further attempt of an undo that failed
RETRY_DELAYS = (0.5, 4.0)


class Cleanup:
    def __init__(self, say: Say | None = None, retry_delays: tuple[float, ...] = RETRY_DELAYS) -> None:
        self._print = say or (lambda _msg: None)
        self._delays = retry_delays
        self._undo: list[tuple[str, Callable[[], None], bool]] = []
        self.removed: list[str] = []
        self.errors: list[str] = []

    def _say(self, message: str) -> None:
        """Tell the user, unless the terminal is gone (SIGHUP): removing must go on regardless."""
        try:
            self._print(message)
        except OSError:
            pass

    def always(self, what: str, undo: Callable[[], None]) -> None:
        """Undo this when the workflow ends, however it ends (builders, temporary keys and security groups)."""
        self._undo.append((what, undo, True))

    def on_failure(self, what: str, undo: Callable[[], None]) -> None:
        """Undo this only if the workflow fails (the product the user asked for is kept on success)."""
        self._undo.append((what, undo, False))

    def __enter__(self) -> Cleanup:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.run(failed=exc_type is not None)

    def run(self, failed: bool) -> None:
        todo = [(w, u) for w, u, always in reversed(self._undo) if always or failed]
        self._undo.clear()
        if not todo:
            return
        with ctrl_c_ignored():
            for what, undo in todo:
                for delay in (*self._delays, None):
                    try:
                        undo()
                        self.removed.append(what)
                        self._say(f"removed {what}")
                        break
                    except Exception as exc:  # keep going: one stuck resource must not leak the others
                        if delay is not None:
                            self._say(f"could not remove {what} yet ({exc}); trying again")
                            time.sleep(delay)
                            continue
                        self.errors.append(f"{what}: {exc}")
                        self._say(f"could not remove {what}: {exc} (`vmlab gc` finds it by its tags)")

