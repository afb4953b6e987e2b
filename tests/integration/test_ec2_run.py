"""`vmlab run` on an EC2 lab: EC2 is moto, the instance a sandbox host with a real sshd booted for it by the EC2
flow harness (harness/clouds/ec2cloud.py), reached through VMLAB_EC2_SSH_HOST/PORT with the host key pinned.
`--stop-after` leaves the instance stopped in EC2; `--down-after` leaves no instance, key pair, security group or
record behind."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from harness.clouds.ec2cloud import SandboxCloud
from harness.drivers.ec2cli import register, run_vmlab, vmlab_resources
from harness.emulators.moto import MotoServer
from vmlab import keys
from vmlab.providers.base import LaunchSpec
from vmlab.providers.ec2 import Ec2Provider
from vmlab.state import LabRecord, LabStore

pytestmark = [pytest.mark.moto, pytest.mark.sshd]


@pytest.fixture()
def ec2_cloud(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, SandboxCloud, str]]:
    moto_server.reset()
    ec2 = boto3.client("ec2", region_name="us-east-1")
    image = register(ec2, "sandbox-root", tags={"vmlab:user": "root"})
    with SandboxCloud(moto_server.endpoint) as cloud:
        monkeypatch.setenv("VMLAB_SSH_CIDR", "203.0.113.7/32")
        monkeypatch.setenv("VMLAB_EC2_SSH_HOST", "127.0.0.1")
        monkeypatch.setenv("VMLAB_EC2_SSH_PORT", str(cloud.port))
        yield ec2, cloud, image
        assert not cloud.errors, cloud.errors


def launch_lab(cloud: SandboxCloud, image: str, name: str) -> str:
    """A lab as `vmlab up` records it, without JupyterLab (run does not need it)."""
    provider = Ec2Provider(poll=0.05, timeout=30.0)
    client, host_key = keys.generate(f"vmlab-lab-{name}"), keys.generate("host")
    inst = provider.launch(LaunchSpec(name=name, image=image, ssh_public_key=client.public, instance_type="t3.micro",
                                      host_key=host_key.private, tags={"vmlab:lab": name, "vmlab:run": "up-test"}))
    deadline = time.monotonic() + 30
    while inst.id not in cloud.ssh_ready:  # the harness boots its sandbox and starts sshd
        assert time.monotonic() < deadline and not cloud.errors, cloud.errors
        time.sleep(0.05)
    store = LabStore()
    key_file = client.save(store.key_path(name))
    store.put(LabRecord(name=name, provider="ec2", instance_id=inst.id, image=image, user=inst.user,
                        key_file=str(key_file), host_key=host_key.public, token="", host=inst.host, port=inst.port,
                        region="us-east-1"))
    return inst.id


def state_of(ec2: Any, iid: str) -> str:
    return str(ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"])


def test_run_then_stop_after_leaves_the_instance_stopped(ec2_cloud: tuple[Any, SandboxCloud, str],
                                                         tmp_path: Path) -> None:
    ec2, cloud, image = ec2_cloud
    iid = launch_lab(cloud, image, "train")
    (tmp_path / "train.sh").write_text("mkdir -p out && echo 0.93 > out/accuracy && echo trained && exit 4\n")
    result = run_vmlab("run", "--json", "train", "--workdir", str(tmp_path), "--outputs", "out", "--stop-after",
                       "--", "sh", "train.sh")
    assert result.exit_code == 4, (result.stdout, result.stderr)
    doc = json.loads(result.stdout)
    assert (doc["rc"], doc["after"], doc["fetched"]) == (4, "stop", ["out/accuracy"])
    assert "trained" in result.stderr
    assert (tmp_path / "out" / "accuracy").read_text() == "0.93\n"
    assert state_of(ec2, iid) == "stopped"
    assert LabStore().get("train") is not None  # stopped, not forgotten


def test_run_then_down_after_leaves_nothing(ec2_cloud: tuple[Any, SandboxCloud, str], tmp_path: Path) -> None:
    ec2, cloud, image = ec2_cloud
    before = vmlab_resources(ec2)
    iid = launch_lab(cloud, image, "once")
    result = run_vmlab("run", "once", "--workdir", str(tmp_path), "--down-after", "--", "sh", "-c", "exit 1")
    assert result.exit_code == 1, (result.stdout, result.stderr)  # a failed command: the lab goes all the same
    assert state_of(ec2, iid) == "terminated"
    assert vmlab_resources(ec2) == before and LabStore().get("once") is None


@pytest.mark.parametrize(("args", "fragment"), [
    (["--type", "2xl+2xa100"], "no instance type in us-east-1 gives at least 32 vCPU, 128 GiB, 2x A100"),
    (["--type", "m+t4", "--max-price", "0.2"], "--max-price applies to spot instances only"),
    (["--region", "mars-north-1"], "mars-north-1"),
])
def test_run_up_on_ec2_refuses_bad_launch_flags_before_anything(ec2_cloud: tuple[Any, SandboxCloud, str],
                                                                tmp_path: Path, args: list[str],
                                                                fragment: str) -> None:
    """`run --up` goes through `up`'s own checks (generic type, spot price, region) before the first resource."""
    ec2, _cloud, image = ec2_cloud
    before = vmlab_resources(ec2)
    result = run_vmlab("run", "job", "--up", "--provider", "ec2", "--image", image, *args, "--workdir",
                       str(tmp_path), "--down-after", "--", "true")
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and fragment in lines[0], (result.stdout, result.stderr)
    assert "launching" not in result.output and vmlab_resources(ec2) == before and LabStore().get("job") is None
