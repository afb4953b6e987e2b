"""A value from the cloud is data, never config: an image tag `vmlab:user` holding a line break and a
`ProxyCommand` (anyone who can tag an image the team uses can plant it) must not run a command on a teammate's
machine at the next `ssh lab`.

Against moto and a real sshd: `vmlab up` refuses the image before creating anything; a lab record that holds
such a user anyway (written by an older vmlab from the instance's tag, or edited) is left out of `vmlab
ssh-config`, whose file OpenSSH then reads without a ProxyCommand, and `vmlab ssh` / `vmlab tunnel` refuse it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from harness.drivers.ec2cli import register, run_vmlab, vmlab_resources
from harness.emulators.moto import MotoServer
from harness.emulators.sshd import SSHD
from vmlab.providers.ec2 import Ec2Provider
from vmlab.state import LabRecord, LabStore

pytestmark = [pytest.mark.moto, pytest.mark.sshd]

REPO = Path(__file__).resolve().parents[2]


def hostile(marker: Path) -> str:
    return f"ubuntu\n ProxyCommand touch {marker}"


@pytest.fixture()
def ec2(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> object:
    moto_server.reset()
    monkeypatch.setenv("VMLAB_SSH_CIDR", "203.0.113.7/32")
    monkeypatch.setenv("VMLAB_EC2_SSH_HOST", "127.0.0.1")
    monkeypatch.setenv("VMLAB_EC2_SSH_PORT", "9")  # should anything get as far as SSH: a closed loopback port
    monkeypatch.delenv("VMLAB_PROVIDER", raising=False)
    return boto3.client("ec2", region_name="us-east-1")


def test_up_refuses_an_image_whose_user_tag_is_config(ec2: object, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    image = register(ec2, "vmlab-lab-evil", tags={"vmlab:recipe-hash": "ab12", "vmlab:user": hostile(marker)})
    before = vmlab_resources(ec2)
    result = run_vmlab("up", "lab", "--provider", "ec2", "--type", "t3.large", "--image", image)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and f"the vmlab:user tag of image {image} 'ubuntu\\n ProxyCommand" in lines[0], lines
    assert "user name" in lines[0]
    assert vmlab_resources(ec2) == before, "refused, yet something was created"
    assert LabStore().get("lab") is None and not marker.exists()


def test_ssh_config_leaves_out_a_lab_whose_user_came_from_a_tag(ec2: object, sshd: SSHD, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    # an instance as an older vmlab launched it: the image's hostile tag copied onto the instance
    image = register(ec2, "vmlab-lab-evil")
    raw = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, TagSpecifications=[  # type: ignore[attr-defined]
        {"ResourceType": "instance", "Tags": [{"Key": "vmlab:launch", "Value": "l-1"},
                                              {"Key": "vmlab:user", "Value": hostile(marker)}]}])
    inst = Ec2Provider(poll=0.05).describe(raw["Instances"][0]["InstanceId"])
    assert inst is not None and inst.user == hostile(marker)  # what EC2 says is kept as data...
    store = LabStore()
    common = dict(provider="local", image="limg-0", key_file=str(sshd.client_key), host_key=sshd.host_key_pub,
                  token="t", host=sshd.host, port=sshd.port)
    # ...and recorded as `vmlab up` records it
    store.put(LabRecord(name="evil", instance_id=inst.id, user=inst.user, **common))  # type: ignore[arg-type]
    store.put(LabRecord(name="good", instance_id="lvm-000000000001", user=sshd.user, **common))  # type: ignore[arg-type]

    home = tmp_path / "home"
    home.mkdir()
    proc = subprocess.run([sys.executable, "-m", "vmlab", "ssh-config", "--install"], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "HOME": str(home)})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "left out lab(s) evil" in lines[0] and "vmlab down evil" in lines[0], lines
    config = Path(os.environ["VMLAB_STATE_DIR"]) / "ssh_config"
    text = config.read_text()
    assert "ProxyCommand" not in text and "Host evil" not in text and "Host good\n" in text
    # what OpenSSH itself makes of the file: no proxy command for any host, and `ssh good` still works
    for host in ("evil", "good"):
        shown = subprocess.run(["ssh", "-G", "-F", str(config), host], capture_output=True, text=True, check=True)
        assert "proxycommand" not in shown.stdout.lower()
    run = subprocess.run(["ssh", "-F", str(home / ".ssh" / "config"), "-o", "BatchMode=yes", "good", "echo", "hi"],
                         capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert run.returncode == 0 and run.stdout == "hi\n", run.stderr
    subprocess.run(["ssh", "-F", str(home / ".ssh" / "config"), "-o", "BatchMode=yes", "-o", "ConnectTimeout=2",
                    "evil", "true"], capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    assert not marker.exists(), "the tag ran a command on this machine"

    for args in (["ssh", "evil", "true"], ["tunnel", "evil", "--once"]):
        refused = subprocess.run([sys.executable, "-m", "vmlab", *args], cwd=REPO, capture_output=True, text=True,
                                 timeout=60, stdin=subprocess.DEVNULL)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "lab evil's user 'ubuntu\\n ProxyCommand" in refused.stderr, refused.stderr
    assert not marker.exists()
