"""A lab's SSH host key on EC2: the launch key travels in the user data (anyone allowed
ec2:DescribeInstanceAttribute, or with a shell on the VM, can read it), so the first connection, verified with
it, makes the VM replace it with one of its own; from then on only that one is accepted. Whoever holds a copy of
the launch key can no longer pass for the lab, and verification stays strict throughout (never trust on first
use, whatever address the VM has).

EC2 is moto; the instance is a sandbox host with a real sshd (harness/clouds/ec2cloud.py boots it from the user
data and key pair as cloud-init would); the impostor is another real sshd holding the key read from the user data.
"""

from __future__ import annotations

import base64
from pathlib import Path

import boto3
import pytest
import yaml

from harness.clouds.ec2cloud import SandboxCloud
from harness.drivers.ec2cli import register
from harness.emulators.moto import MotoServer
from harness.emulators.sshd import SSHD
from vmlab import keys
from vmlab.errors import ConnectError
from vmlab.providers.base import LaunchSpec
from vmlab.providers.ec2 import Ec2Provider
from vmlab.transport.ssh import SSHConnection, SSHTarget
from vmlab.workflows.connect import connect_instance, connect_launched

pytestmark = [pytest.mark.moto, pytest.mark.sshd]


def words(line: str) -> list[str]:
    return line.split()[:2]


def test_the_first_connection_replaces_the_launch_key(moto_server: MotoServer, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    moto_server.reset()
    ec2 = boto3.client("ec2", region_name="us-east-1")
    ami = register(ec2, "sandbox-base", tags={"vmlab:user": "root"})  # the sandbox's sshd logs in root
    client, launch = keys.generate("client"), keys.generate("host")
    key_file = client.save(tmp_path / "client_ed25519")
    with SandboxCloud(moto_server.endpoint) as cloud:
        monkeypatch.setenv("VMLAB_SSH_CIDR", "203.0.113.7/32")
        monkeypatch.setenv("VMLAB_EC2_SSH_HOST", "127.0.0.1")
        monkeypatch.setenv("VMLAB_EC2_SSH_PORT", str(cloud.port))
        provider = Ec2Provider(poll=0.05, timeout=30.0)
        inst = provider.launch(LaunchSpec(name="lab", image=ami, ssh_public_key=client.public,
                                          host_key=launch.private, tags={"vmlab:lab": "lab"}))
        try:
            conn, pinned = connect_launched(provider, inst, key_file, launch.public, timeout=30)
            with conn:
                assert conn.run("echo", "verified").stdout == "verified\n"
            assert cloud.current is not None
            on_vm = cloud.current.path("/etc/ssh/ssh_host_ed25519_key.pub").read_text()
            assert words(pinned) == words(on_vm) and words(pinned) != words(launch.public)

            # what anyone allowed DescribeInstanceAttribute reads: the launch key, private half included
            user_data = ec2.describe_instance_attribute(InstanceId=inst.id, Attribute="userData")["UserData"]
            stolen = yaml.safe_load(base64.b64decode(user_data["Value"]))["ssh_keys"]
            assert words(stolen["ed25519_public"]) == words(launch.public)

            # the lab itself no longer presents it...
            with pytest.raises(ConnectError) as gone:
                connect_instance(provider, inst, key_file, launch.public, timeout=2)
            assert gone.value.reason == "hostkey"
            # ...and an impostor holding it (at the lab's address, say after a DNS or route hijack) is refused
            impostor = SSHD(tmp_path / "impostor")
            impostor.host_key.write_text(stolen["ed25519_private"])
            impostor.host_key.chmod(0o600)
            (impostor.workdir / "authorized_keys").write_text(client.public + "\n")
            impostor.start()
            try:
                fake = SSHTarget(impostor.host, port=impostor.port, user=impostor.user, key_file=key_file,
                                 host_key_alias=f"vmlab-{inst.id}", pinned_host_key=pinned)
                with pytest.raises(ConnectError) as refused:
                    SSHConnection(fake).open()
                assert refused.value.reason == "hostkey"
                # (with the launch key pinned, as before, the impostor would have been taken for the lab)
                with SSHConnection(SSHTarget(impostor.host, port=impostor.port, user=impostor.user,
                                             key_file=key_file, pinned_host_key=launch.public)).open() as fooled:
                    assert fooled.run("true").rc == 0
            finally:
                impostor.cleanup()
        finally:
            provider.terminate(inst.id)
        assert not cloud.errors
