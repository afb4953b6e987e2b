"""Cleanup undoes what a workflow made: everything on failure or Ctrl-C, only the temporary on success."""

from __future__ import annotations

import pytest

from vmlab.workflows.cleanup import Cleanup


def test_success_keeps_the_product_and_removes_temporaries() -> None:
    done: list[str] = []
    with Cleanup() as c:
        c.always("key", lambda: done.append("key"))
        c.on_failure("image", lambda: done.append("image"))
        c.always("builder", lambda: done.append("builder"))
    assert done == ["builder", "key"]
    assert c.removed == ["builder", "key"]


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_failure_and_ctrl_c_remove_everything_newest_first(exc: BaseException) -> None:
    done: list[str] = []
    with pytest.raises(type(exc)):
        with Cleanup() as c:
            c.always("key", lambda: done.append("key"))
            c.on_failure("image", lambda: done.append("image"))
            raise exc
    assert done == ["image", "key"]


def test_one_failing_undo_does_not_stop_the_others() -> None:
    said: list[str] = []

    def stuck() -> None:
        raise OSError("still attached")

    with pytest.raises(RuntimeError):
        with Cleanup(said.append, retry_delays=(0.0,)) as c:
            c.always("volume", stuck)
            c.always("key", lambda: None)
            raise RuntimeError("boom")
    assert c.removed == ["key"]
    assert c.errors == ["volume: still attached"]
    assert any("could not remove volume" in s and "vmlab gc" in s for s in said)


def test_an_undo_that_fails_once_is_tried_again() -> None:
    attempts: list[str] = []

    def flaky() -> None:
        attempts.append("terminate")
        if len(attempts) == 1:
            raise OSError("RequestLimitExceeded")

    with Cleanup(retry_delays=(0.0, 0.0)) as c:
        c.always("builder", flaky)
    assert attempts == ["terminate", "terminate"]
    assert c.removed == ["builder"] and c.errors == []
