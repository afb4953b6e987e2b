"""Fixtures shared by every test: private state/cache dirs, a real sshd, a moto server. Logic lives in
harness/ (top level, shared with bench/); this file only wires it to pytest."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# `pytest` run from anywhere (not only `python -m pytest` in the repo) must import vmlab and harness.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from harness.emulators.moto import MotoServer  # noqa: E402
from harness.emulators.sshd import SSHD  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    """The suite sends SIGHUP and SIGINT to the vmlab processes it starts, to prove they clean up; a run under
    `nohup` (or as a shell's background job) would pass those signals on ignored, and vmlab keeps an ignored
    signal ignored (it is the user's choice), so the tests' signals would do nothing. Give them back their
    default action for this process and its children."""
    import signal

    for sig in (signal.SIGHUP, signal.SIGINT):
        if signal.getsignal(sig) == signal.SIG_IGN:
            signal.signal(sig, signal.SIG_DFL if sig == signal.SIGHUP else signal.default_int_handler)

AWS_TEST_ENV = {
    "AWS_MAX_ATTEMPTS": "1",  # botocore would retry moto's 500s and hide them
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


@pytest.fixture(autouse=True)
def _private_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own VMLAB_STATE_DIR and VMLAB_CACHE_DIR: no test reads or writes the user's."""
    base = tmp_path_factory.mktemp("vmlab")
    monkeypatch.setenv("VMLAB_STATE_DIR", str(base / "state"))
    monkeypatch.setenv("VMLAB_CACHE_DIR", str(base / "cache"))
    # No test leaves an SSH connection master behind unless it asks for one (tests/integration/test_ssh_persist.py).
    monkeypatch.setenv("VMLAB_SSH_PERSIST", "0")


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHD]:
    """A real OpenSSH sshd on 127.0.0.1: `.host`, `.port`, `.user`, `.client_key`, `.host_key_pub`,
    `.target(**overrides)` -> SSHTarget, `.restart()`, `.stop()`, `.start()`, `.log()`."""
    server = SSHD(tmp_path_factory.mktemp("sshd"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """A moto server on 127.0.0.1 with AWS_* pointing at it for the whole session (restored afterwards):
    `.endpoint`, `.reset()`, `.stop()`. Tests that need a clean account call `moto_server.reset()`."""
    server = MotoServer.start_new()
    saved = {name: os.environ.get(name) for name in [*AWS_TEST_ENV, "AWS_ENDPOINT_URL", "AWS_PROFILE"]}
    os.environ.update(AWS_TEST_ENV)
    os.environ["AWS_ENDPOINT_URL"] = server.endpoint
    # A profile from the developer's ~/.aws would override the fake credentials above.
    os.environ.pop("AWS_PROFILE", None)
    try:
        yield server
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.cleanup()


from harness.emulators.azurite import Azurite, find_azurite  # noqa: E402
from harness.emulators.gcs import FakeGCS  # noqa: E402
from harness.faults.awsfaults import FaultProxy  # noqa: E402


@pytest.fixture()
def aws_faults(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """A clean moto account behind a FaultProxy, with AWS_ENDPOINT_URL pointing at the proxy for this test (so
    vmlab subprocesses go through it too): `.calls`, `.records`, `.fail()`, `.fail_call()`, `.delay()`,
    `.wait_for()`, `.reset()`. Reset moto yourself (`moto_server.reset()`) when a test runs several attempts."""
    moto_server.reset()
    with FaultProxy(moto_server.endpoint) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        yield proxy


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """Azurite's Blob service on 127.0.0.1 (installed into .tools/ by scripts/deps.sh): `.endpoint`,
    `.service_client()`, `.container_url(container, prefix)`, `.sas(container, permission, expires_in)`.
    Skipped where azurite is not installed, except in CI."""
    binary = find_azurite()
    if binary is None:
        message = "azurite is not installed: run `. scripts/deps.sh; vmlab_test_tools`"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    server = Azurite.start_new(binary)
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def fake_gcs() -> Iterator[FakeGCS]:
    """fake-gcs-server on 127.0.0.1, in memory: `.endpoint` (for STORAGE_EMULATOR_HOST), `.client()`."""
    server = FakeGCS.start_new()
    try:
        yield server
    finally:
        server.cleanup()
