"""`vmlab up --provider container`: a lab container from an image with JupyterLab and the agent (conftest's
lab_image), published on 127.0.0.1 only, its data on a named volume kept across stop/start; `tunnel` prints the
URL (200 with the token, 403 without), `down` removes container, volume and record. With `--sync` to the moto
server (reached through slirp4netns's host loopback, enabled for the test only) the data folder is restored at
start and a change is uploaded. Bad input and a SIGTERM during `up` leave nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from click.testing import CliRunner, Result

from vmlab.engine.command import Command
from vmlab.providers.container.provider import ContainerProvider

pytestmark = pytest.mark.container


def vmlab(*args: str) -> Result:
    from vmlab.cli import cli

    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def leftovers(provider: ContainerProvider) -> tuple[list[str], list[str]]:
    """Every container and volume of the engine."""
    return (provider.engine.text("ps", "-a", "--format", "{{.Names}}").split(),
            provider.engine.text("volume", "ls", "--format", "{{.Name}}").split())


def status(url: str, token: str | None) -> int:
    headers = {"Authorization": f"token {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def listeners(port: int) -> list[str]:
    """The local addresses anything listens on at `port` (`ss -ltn`)."""
    out = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True, check=True).stdout
    return [line.split()[3].rsplit(":", 1)[0] for line in out.splitlines() if line.split()[3].endswith(f":{port}")]


def in_lab(provider: ContainerProvider, name: str, script: str) -> str:
    result = provider.exec_host(name).execute(Command("sh", "-c", script))
    assert result.rc == 0, result.stderr
    return str(result.stdout)


def ssh_output(name: str, *command: str) -> str:
    """`vmlab ssh NAME -- COMMAND` on a terminal (it asks podman for one: -it), its output."""
    import pty

    leader, follower = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-m", "vmlab", "ssh", name, "--", *command], stdin=follower,
                              stdout=follower, stderr=follower, timeout=30, env=os.environ.copy())
        os.close(follower)
        follower = -1
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the terminal is closed and read out
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        if follower >= 0:
            os.close(follower)
        os.close(leader)
    assert proc.returncode == 0, b"".join(chunks)
    return b"".join(chunks).decode(errors="replace")


def up(name: str, image: str, *extra: str) -> dict[str, Any]:
    result = vmlab("up", name, "--provider", "container", "--image", image, "--idle", "0", "--json", *extra)
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


def test_up_tunnel_stop_start_down(provider: ContainerProvider, lab_image: str) -> None:
    started = time.monotonic()
    made = up("ctr1", lab_image)
    print(f"container lab up in {time.monotonic() - started:.1f}s: {made['timings']}")
    record = made["lab"]
    assert record["host"] == "127.0.0.1" and "token" not in record  # the token stays in the 0600 record file
    shown = vmlab("tunnel", "ctr1", "--json")
    assert shown.exit_code == 0, shown.output
    url = json.loads(shown.stdout)["url"]
    port = int(url.split(":")[2].split("/")[0])
    token = url.split("token=")[1]
    assert url.startswith(f"http://127.0.0.1:{port}/lab?token=") and len(token) >= 32
    api = f"http://127.0.0.1:{port}/api/status"
    assert status(api, token) == 200 and status(api, None) == 403
    assert listeners(port) == ["127.0.0.1"]  # nothing on 0.0.0.0, [::] or another address
    assert vmlab("tunnel", "ctr1", "--port", "9000").exit_code == 2  # its port is the provider's

    in_lab(provider, "ctr1", "echo kept > /root/data/notes.txt")
    assert "kept" in ssh_output("ctr1", "cat", "/root/data/notes.txt")  # `vmlab ssh`: podman exec -it, no sshd
    assert vmlab("stop", "ctr1").exit_code == 0
    assert provider.describe("ctr1").state == "stopped"  # type: ignore[union-attr]
    assert vmlab("start", "ctr1").exit_code == 0
    again = vmlab("tunnel", "ctr1", "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["url"] == url, again.output
    assert in_lab(provider, "ctr1", "cat /root/data/notes.txt") == "kept\n"
    assert vmlab("stop", "ctr1").exit_code == 0
    resumed = up("ctr1", lab_image)  # `up` of a stopped container lab starts it (same token, same data)
    assert resumed["resumed"] is True and resumed["lab"]["port"] == port
    listed = json.loads(vmlab("ls", "--json").stdout)["labs"]
    assert [lab["name"] for lab in listed] == ["ctr1"]

    assert vmlab("down", "ctr1").exit_code == 0
    assert leftovers(provider) == ([], [])
    assert json.loads(vmlab("ls", "--json").stdout)["labs"] == []
    assert listeners(port) == []


@pytest.mark.parametrize("args, says", [
    (("Bad_Name",), "lab name 'Bad_Name' is not valid"),
    (("ctr2", "--image", "debian-12"), "has no vmlab agent"),
    (("ctr2", "--volume-size", "20"), "--volume-size does not apply to containers"),
    (("ctr2", "--spot"), "--spot only applies to --provider ec2"),
    (("ctr2", "--sync", "ftp://x/y"), "--sync"),
])
def test_bad_input_exits_2_and_makes_nothing(provider: ContainerProvider, lab_image: str,
                                             args: tuple[str, ...], says: str) -> None:
    image = () if "--image" in args else ("--image", lab_image)
    result = vmlab("up", *args[:1], "--provider", "container", *image, *args[1:])
    assert result.exit_code == 2 and says in result.output, result.output
    assert len(result.output.strip().splitlines()) <= 2
    assert leftovers(provider) == ([], [])


def test_sync_restores_at_start_and_uploads(provider: ContainerProvider, lab_image: str, moto_server: Any,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    monkeypatch.setenv("VMLAB_CONTAINER_HOST_LOOPBACK", "1")  # the moto server is on this machine's loopback
    s3 = boto3.client("s3", endpoint_url=moto_server.endpoint)
    s3.create_bucket(Bucket="ctrlab")
    s3.put_object(Bucket="ctrlab", Key="alice/restored.txt", Body=b"from the bucket\n")
    up("ctr3", lab_image, "--sync", "s3://ctrlab/alice")
    assert in_lab(provider, "ctr3", "cat /root/data/restored.txt") == "from the bucket\n"
    in_lab(provider, "ctr3", "echo written in the lab > /root/data/new.txt")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="ctrlab", Prefix="alice/").get("Contents", [])]
        if "alice/new.txt" in keys:
            break
        time.sleep(0.5)
    assert s3.get_object(Bucket="ctrlab", Key="alice/new.txt")["Body"].read() == b"written in the lab\n"
    removed = vmlab("down", "ctr3")  # stops the lab (its agent pushes on SIGTERM), reads its status, removes it
    assert removed.exit_code == 0, removed.output
    assert leftovers(provider) == ([], [])


@pytest.mark.parametrize("fault", ["SIGTERM", "SIGINT", "SIGHUP", "container killed"])
def test_fault_during_up_leaves_nothing(provider: ContainerProvider, lab_image: str, fault: str) -> None:
    """A signal to vmlab, or the lab container killed under it, once the container exists (JupyterLab still
    starting): exit 128+signal (or 1), no container, no volume, no record."""
    proc = subprocess.Popen([sys.executable, "-m", "vmlab", "up", "ctr4", "--provider", "container", "--image",
                             lab_image], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=os.environ.copy())
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if "ctr4" in leftovers(provider)[0]:
                break
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            time.sleep(0.1)
        else:
            pytest.fail("the lab container never appeared")
        if fault == "container killed":
            provider.engine.text("kill", "ctr4")
        else:
            proc.send_signal(getattr(signal, fault))
        out = proc.communicate(timeout=60)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    expected = 1 if fault == "container killed" else 128 + getattr(signal, fault)
    assert proc.returncode == expected, out
    assert fault != "container killed" or "stopped while starting" in out
    assert leftovers(provider) == ([], [])
    assert json.loads(vmlab("ls", "--json").stdout)["labs"] == []


def test_a_volume_made_before_up_is_used_and_kept_by_a_failed_launch(provider: ContainerProvider, lab_image: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """`vmlab-NAME-data` made by hand (say, restored from a backup) is the lab's data folder; a launch whose
    `podman run` fails (here: the port it was given is taken meanwhile) leaves it alone."""
    import socket

    from vmlab.providers.container import labcontainer

    provider.engine.text("volume", "create", "vmlab-ctr5-data")
    provider.engine.text("run", "--rm", "--network", "none", "-v", "vmlab-ctr5-data:/d", lab_image, "sh", "-c",
                         "echo from before > /d/old.txt")
    from vmlab.providers.base import LaunchSpec
    from vmlab.providers.capabilities import LabLaunch

    spec = LaunchSpec("ctr5", lab_image, "", tags={"vmlab:lab": "ctr5", "vmlab:run": "t"})
    with socket.socket() as taken, monkeypatch.context() as patch:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        patch.setattr(labcontainer, "free_port", lambda: taken.getsockname()[1])
        with pytest.raises(Exception, match="starting lab container ctr5 failed"):
            provider.launch_lab(spec, LabLaunch("t" * 40))
    assert leftovers(provider) == ([], ["vmlab-ctr5-data"])
    up("ctr5", lab_image)
    assert in_lab(provider, "ctr5", "cat /root/data/old.txt") == "from before\n"
    assert vmlab("down", "ctr5").exit_code == 0
    assert leftovers(provider) == ([], [])
