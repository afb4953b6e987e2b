"""A container lab's agent state (manifest, journal of what is not uploaded yet, status) lives on the volume
`vmlab-LAB-agent`, beside the data volume, so it outlives the container: a lab relaunched on its kept volumes
uploads the edit the last container could not (as an edit: no conflict copy), and `vmlab down` of a stopped lab
proves its data is in the bucket with the agent's own `sync --once` in a short container before anything goes,
refusing in one line while the bucket refuses the upload or cannot be reached, and flushing once it can.

The bucket is on the moto server behind a FaultProxy (conftest's aws_faults), reached from the containers through
slirp4netns's host loopback (enabled for these tests only)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from harness.emulators.moto import object_text
from harness.faults.awsfaults import FaultProxy
from vmlab.providers.container.provider import ContainerProvider
from vmlab.state import LabStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_container_lab import in_lab, leftovers, up, vmlab  # noqa: E402

pytestmark = pytest.mark.container
BUCKET = "agentstate"


@pytest.fixture()
def s3(aws_faults: FaultProxy, moto_server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The bucket, reached directly (not through the proxy); the labs reach it through the proxy."""
    import boto3

    monkeypatch.setenv("VMLAB_CONTAINER_HOST_LOOPBACK", "1")  # the proxy is on this machine's loopback
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # a refused upload fails at once (the agent retries it itself)
    client = boto3.client("s3", endpoint_url=moto_server.endpoint)
    client.create_bucket(Bucket=BUCKET)
    return client


def keys(s3: Any, prefix: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", []))


def refuse_uploads(aws_faults: FaultProxy, key: str) -> str:
    """Every PUT of `key` answered 503 from now on (until aws_faults.reset()); returns the action's name."""
    action = f"PUT /{BUCKET}/{key}"
    aws_faults.fail(action, nth=None, code="ServiceUnavailable", status=503)
    return action


def error_line(output: str) -> str:
    """The error of a refused `down`: its one line, the last (after the progress line)."""
    lines = output.strip().splitlines()
    assert lines[-1].startswith("vmlab: error: lab ctr6 has data not yet synced to s3://"), output
    assert [line for line in lines if "error" in line] == lines[-1:], output
    return lines[-1]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_down_of_a_stopped_lab_with_an_unsynced_change_refuses_then_flushes_it(
        provider: ContainerProvider, lab_image: str, s3: Any, aws_faults: FaultProxy,
        monkeypatch: pytest.MonkeyPatch) -> None:
    up("ctr6", lab_image, "--sync", f"s3://{BUCKET}/bob")
    assert leftovers(provider) == (["ctr6"], ["vmlab-ctr6-agent", "vmlab-ctr6-data"])
    action = refuse_uploads(aws_faults, "bob/draft.txt")
    in_lab(provider, "ctr6", "printf 'draft\\n' > /root/data/draft.txt")
    assert aws_faults.wait_for(action), aws_faults.calls
    assert vmlab("stop", "ctr6").exit_code == 0  # its agent's last push is refused too: the change is unsynced

    started = time.monotonic()
    refused = vmlab("down", "ctr6")
    print(f"down refused (upload refused) in {time.monotonic() - started:.1f}s", file=sys.stderr)
    assert refused.exit_code == 1 and "vmlab start ctr6" in error_line(refused.output), refused.output
    tries = aws_faults.calls.count(action)
    with monkeypatch.context() as patch:  # this shell points elsewhere: the check still uses the lab's own store
        patch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port()}")
        elsewhere = vmlab("down", "ctr6")
    assert elsewhere.exit_code == 1 and "vmlab start ctr6" in error_line(elsewhere.output), elsewhere.output
    assert aws_faults.calls.count(action) > tries  # the upload was tried again, at the lab's store
    aws_faults.fail(f"GET /{BUCKET}", nth=None, code="ServiceUnavailable", status=503)  # the store cannot be read
    started = time.monotonic()
    unreachable = vmlab("down", "ctr6")
    print(f"down refused (no store) in {time.monotonic() - started:.1f}s", file=sys.stderr)
    last = unreachable.output.strip().splitlines()[-1]  # no status of this check (the old one is not read): no proof
    assert unreachable.exit_code == 1 and last.startswith("vmlab: error: cannot read lab ctr6's sync status, so its "
                                                          "data may not be in its bucket"), unreachable.output
    assert "vmlab start ctr6" in last, unreachable.output
    assert leftovers(provider) == (["ctr6"], ["vmlab-ctr6-agent", "vmlab-ctr6-data"])
    assert provider.describe("ctr6").state == "stopped"  # type: ignore[union-attr]
    assert "bob/draft.txt" not in keys(s3, "bob/")

    aws_faults.reset()  # the bucket takes uploads again
    interrupted_during_the_check(provider, aws_faults)
    started = time.monotonic()
    removed = vmlab("down", "ctr6")
    print(f"down (flushed, then removed) in {time.monotonic() - started:.1f}s", file=sys.stderr)
    assert removed.exit_code == 0, removed.output
    assert object_text(s3, BUCKET, "bob/draft.txt", timeout=0) == "draft\n"
    assert leftovers(provider) == ([], [])


def interrupted_during_the_check(provider: ContainerProvider, aws_faults: FaultProxy) -> None:
    """SIGTERM to `vmlab down` while its flush container waits for the bucket: exit 143, the flush container is
    gone, the lab is kept whole."""
    listing = f"GET /{BUCKET}"
    aws_faults.delay(listing, 30, nth=1)
    proc = subprocess.Popen([sys.executable, "-m", "vmlab", "down", "ctr6"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=os.environ.copy())
    try:
        assert aws_faults.wait_for(listing, timeout=60), aws_faults.calls
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=60)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, out
    assert leftovers(provider) == (["ctr6"], ["vmlab-ctr6-agent", "vmlab-ctr6-data"])
    aws_faults.reset()


def test_a_lab_relaunched_on_its_volumes_uploads_the_edit_the_last_container_could_not(
        provider: ContainerProvider, lab_image: str, s3: Any, aws_faults: FaultProxy) -> None:
    """A hub's relaunch: the container goes, its volumes stay, a new container starts on them. The edit of a
    synced file that was refused before the stop is uploaded as an edit (the manifest came along: no conflict
    copy, as a restore with no record of the last sync would make)."""
    up("ctr7", lab_image, "--sync", f"s3://{BUCKET}/cat")
    in_lab(provider, "ctr7", "printf 'v1\\n' > /root/data/notes.txt")
    assert object_text(s3, BUCKET, "cat/notes.txt") == "v1\n"
    action = refuse_uploads(aws_faults, "cat/notes.txt")
    in_lab(provider, "ctr7", "printf 'v2, edited\\n' > /root/data/notes.txt")
    assert aws_faults.wait_for(action), aws_faults.calls
    assert vmlab("stop", "ctr7").exit_code == 0
    provider.discard_lab("ctr7")  # as vmlab.hub.served.discard_previous does
    LabStore().delete("ctr7")
    assert leftovers(provider) == ([], ["vmlab-ctr7-agent", "vmlab-ctr7-data"])
    aws_faults.reset()

    up("ctr7", lab_image, "--sync", f"s3://{BUCKET}/cat")
    deadline = time.monotonic() + 30
    while object_text(s3, BUCKET, "cat/notes.txt") != "v2, edited\n":
        assert time.monotonic() < deadline, keys(s3, "cat/")
        time.sleep(0.3)
    assert keys(s3, "cat/") == ["cat/.~vmlab-agent-marker", "cat/notes.txt"]
    assert in_lab(provider, "ctr7", "ls /root/data") == "notes.txt\n"  # no conflict copy, no agent file
    listed = json.loads(vmlab("ls", "--json").stdout)["labs"]  # `ls` reads the status on the agent's volume
    assert listed[0]["agent"]["summary"].startswith("synced"), listed
    removed = vmlab("down", "ctr7")
    assert removed.exit_code == 0, removed.output
    assert leftovers(provider) == ([], [])


def test_down_of_a_lab_whose_container_is_gone_checks_and_removes_its_volumes(
        provider: ContainerProvider, lab_image: str, s3: Any) -> None:
    """Only the volumes are left (the container removed by hand, a relaunch that failed): `down` runs the
    agent's push from the lab's recorded image, uploads what the volume holds unsynced, removes both volumes."""
    up("ctr8", lab_image, "--sync", f"s3://{BUCKET}/dee")
    assert vmlab("stop", "ctr8").exit_code == 0
    provider.discard_lab("ctr8")
    provider.engine.text("run", "--rm", "--network", "none", "-v", "vmlab-ctr8-data:/d", lab_image, "sh", "-c",
                         "echo written while no agent ran > /d/late.txt")
    removed = vmlab("down", "ctr8")
    assert removed.exit_code == 0, removed.output
    assert object_text(s3, BUCKET, "dee/late.txt", timeout=0) == "written while no agent ran\n"
    assert leftovers(provider) == ([], [])
