"""`vmlab bake`, `vmlab up` and `vmlab down` on EC2, end to end through the real CLI: EC2 is moto, every instance
is a throwaway sandbox host with a real sshd (harness/clouds/ec2cloud.py boots it from the instance's user data
and key pair, as cloud-init would), and the lab runs a real JupyterLab.

One bake is shared by the module: the tests check what it made, what it removed, how the short-lived builder was
locked down, that baking again reuses the image (and `--force` does not), and that a lab launched from the image
(the builder's disk, scrubbed) answers with its fresh token only, until `down` removes it all.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from harness.clouds.ec2cloud import SandboxCloud, leftovers
from harness.clouds.sandbox import MASKED, lab_port_turn
from harness.emulators.moto import MotoServer
from vmlab import lab

pytestmark = [pytest.mark.moto, pytest.mark.sshd]

ROOT = Path(__file__).resolve().parents[2]
RECIPE = Path(__file__).parent / "recipes" / "ec2_flow.py"
CIDR = "203.0.113.7/32"
JUPYTER = str(Path(sys.executable).parent / "jupyter")
#: the test venv and its Python, where the sandbox masks them (pyenv keeps Python under /root): shared read only
#: into the lab's sandbox so its JupyterLab can run
SHARED = tuple(dict.fromkeys(
    p for p in (os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix))
    if any(p == f"/{m}" or p.startswith(f"/{m}/") for m in MASKED)))


def seed_base(ec2: Any) -> str:
    """A base AMI whose login user is root (the sandbox's sshd logs in root, as vmlab-tagged images say)."""
    ami = str(ec2.register_image(Name="sandbox-base", RootDeviceName="/dev/sda1", VirtualizationType="hvm",
                                 BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 8}}])[
        "ImageId"])
    ec2.create_tags(Resources=[ami], Tags=[{"Key": "vmlab:user", "Value": "root"}])
    return ami


def deleted(path: Path) -> bool:
    """Absent from an overlay upper dir, or an overlay whiteout there (a 0/0 character device)."""
    if not path.exists():
        return True
    st = path.lstat()
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def scrubbed_files() -> dict[str, bytes]:
    """Files of the test machine that the bake's scrub deletes or empties on the builder."""
    paths = [Path("/etc/machine-id"), *Path("/etc/ssh").glob("ssh_host_*"), *Path("/root/.ssh").glob("authorized_keys")]
    return {str(p): p.read_bytes() for p in paths if p.is_file()}


def cli_env(endpoint: str, port: int, state: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "AWS_ENDPOINT_URL": endpoint, "VMLAB_SSH_CIDR": CIDR,
            "VMLAB_EC2_SSH_HOST": "127.0.0.1", "VMLAB_EC2_SSH_PORT": str(port), "VMLAB_STATE_DIR": str(state),
            "VMLAB_CACHE_DIR": str(state / "cache"), "NO_COLOR": "1"}


def vmlab(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmlab", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def bake_args(ami: str, *extra: str) -> list[str]:
    return ["bake", str(RECIPE), "--provider", "ec2", "--base", ami, "-e", f"jupyter={JUPYTER}", *extra]


@pytest.fixture(scope="module")
def flow(moto_server: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    moto_server.reset()
    ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=moto_server.endpoint)
    ami = seed_base(ec2)
    before = scrubbed_files()
    assert before, "nothing to compare: the test machine has no host keys or machine id"
    with lab_port_turn(lab.PORT), SandboxCloud(moto_server.endpoint, share=SHARED) as cloud:
        env = cli_env(moto_server.endpoint, cloud.port, tmp_path_factory.mktemp("state"))
        baked = vmlab(env, *bake_args(ami, "--json"))
        assert baked.returncode == 0, baked.stderr + baked.stdout
        yield {"ec2": ec2, "ami": ami, "cloud": cloud, "env": env, "bake": json.loads(baked.stdout),
               "before": before}
        assert not cloud.errors


def test_bake_makes_a_tagged_image_and_removes_the_builder(flow: dict[str, Any]) -> None:
    ec2, result, cloud = flow["ec2"], flow["bake"], flow["cloud"]
    (image,) = ec2.describe_images(ImageIds=[result["image"]])["Images"]
    tags = {t["Key"]: t["Value"] for t in image["Tags"]}
    assert image["State"] == "available" and not result["reused"]
    assert tags["vmlab:recipe"] == "ec2-flow" and tags["vmlab:recipe-hash"] == result["recipe_hash"]
    assert tags["vmlab:run"].startswith("bake-") and tags["vmlab:user"] == "root"
    snapshots = [m["Ebs"]["SnapshotId"] for m in image["BlockDeviceMappings"] if "Ebs" in m]
    assert snapshots
    for snap in ec2.describe_snapshots(SnapshotIds=snapshots)["Snapshots"]:
        snap_tags = {t["Key"]: t["Value"] for t in snap["Tags"]}
        assert {k: snap_tags.get(k) for k in ("vmlab:run", "vmlab:recipe", "vmlab:recipe-hash")} == {
            k: tags[k] for k in ("vmlab:run", "vmlab:recipe", "vmlab:recipe-hash")}
    builder = tags["vmlab:source-instance"]
    assert cloud.booted[:1] == [builder]
    (raw,) = ec2.describe_instances(InstanceIds=[builder])["Reservations"][0]["Instances"]
    assert raw["State"]["Name"] == "terminated"
    left = leftovers(ec2)
    assert left["instances"] == left["key_pairs"] == left["groups"] == [], left
    assert set(left["images"]) == {result["image"]} and set(left["snapshots"]) == set(snapshots)
    # the recipe really ran on the builder, and the scrub really scrubbed it: its disk shows both
    disk = cloud.disks[builder]
    assert (disk / "etc/vmlab-flow-marker").read_text() == "baked by test_ec2_flow\n"
    assert (disk / "var/lib/vmlab-flow/stamp").is_file()
    assert deleted(disk / "root/.ssh/authorized_keys") and deleted(disk / "etc/ssh/ssh_host_ed25519_key")
    assert (disk / "etc/machine-id").read_text() == ""


def test_the_image_says_what_it_holds(flow: dict[str, Any]) -> None:
    """The package list taken on the builder is in the image, its sha256 in the image's tags, and `vmlab images
    show` prints it."""
    import hashlib

    ec2, result, cloud = flow["ec2"], flow["bake"], flow["cloud"]
    (image,) = ec2.describe_images(ImageIds=[result["image"]])["Images"]
    tags = {t["Key"]: t["Value"] for t in image["Tags"]}
    in_image = (cloud.disks[tags["vmlab:source-instance"]] / "usr/share/vmlab/packages.json").read_bytes()
    assert hashlib.sha256(in_image).hexdigest() == tags["vmlab:packages-sha256"]
    listed = json.loads(in_image)
    assert listed["apt"]["openssh-server"] and tags["vmlab:packages"].startswith(f"apt {len(listed['apt'])}, ")
    shown = vmlab(flow["env"], "images", "show", result["image"], "--provider", "ec2", "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["packages"] == listed
    text = vmlab(flow["env"], "images", "show", result["image"], "--provider", "ec2").stdout
    assert f"apt     openssh-server {listed['apt']['openssh-server']}" in text


def test_the_builder_was_locked_down(flow: dict[str, Any]) -> None:
    cloud = flow["cloud"]
    seen = cloud.seen[cloud.booted[0]]
    assert seen["instance"]["MetadataOptions"]["HttpTokens"] == "required"
    (volume,) = seen["volumes"]
    assert volume["Encrypted"] is True and volume["VolumeType"] == "gp3"
    (group,) = seen["groups"]
    rules = [(p["IpProtocol"], p.get("FromPort"), p.get("ToPort"), [r["CidrIp"] for r in p["IpRanges"]],
              p.get("Ipv6Ranges"), p.get("UserIdGroupPairs")) for p in group["IpPermissions"]]
    assert rules == [("tcp", 22, 22, [CIDR], [], [])]


def test_the_real_machine_is_untouched(flow: dict[str, Any]) -> None:
    # the recipe wrote a marker and the scrub deleted host keys, authorized keys and emptied the machine id:
    # all inside the sandbox, none on the test machine
    assert not Path("/etc/vmlab-flow-marker").exists() and not Path("/var/lib/vmlab-flow").exists()
    assert scrubbed_files() == flow["before"]


def test_baking_again_reuses_the_image_and_force_rebuilds(flow: dict[str, Any]) -> None:
    ec2, env, ami, first = flow["ec2"], flow["env"], flow["ami"], flow["bake"]["image"]
    again = vmlab(env, *bake_args(ami))
    assert again.returncode == 0, again.stderr
    assert f"({first}) already has recipe ec2-flow" in again.stdout and "reusing it" in again.stdout
    assert len(flow["cloud"].booted) == 1  # no builder launched
    forced = vmlab(env, *bake_args(ami, "--force", "--json"))
    assert forced.returncode == 0, forced.stderr
    rebuilt = json.loads(forced.stdout)["image"]
    assert rebuilt != first and not json.loads(forced.stdout)["reused"]
    left = leftovers(ec2)
    assert left["instances"] == left["key_pairs"] == left["groups"] == []
    ec2.deregister_image(ImageId=rebuilt)  # the lab below must come from the first image


def test_up_serves_jupyter_with_its_token_and_down_removes_everything(flow: dict[str, Any]) -> None:
    ec2, env, cloud, image = flow["ec2"], flow["env"], flow["cloud"], flow["bake"]["image"]
    up = vmlab(env, "up", "flowlab", "--provider", "ec2", "--image", image, "--json")
    assert up.returncode == 0, up.stderr + up.stdout
    lab_id = json.loads(up.stdout)["lab"]["instance_id"]
    assert cloud.current_id == lab_id
    # the lab booted from the builder's scrubbed disk
    assert cloud.current is not None and cloud.current.path("/etc/vmlab-flow-marker").is_file()
    record = json.loads((Path(env["VMLAB_STATE_DIR"]) / "labs" / "flowlab.json").read_text())
    status = f"http://127.0.0.1:{lab.PORT}/api/status"
    with urllib.request.urlopen(urllib.request.Request(
            status, headers={"Authorization": f"token {record['token']}"}), timeout=10) as answer:
        assert answer.status == 200
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(status, timeout=10)
    assert refused.value.code == 403
    (raw,) = ec2.describe_instances(InstanceIds=[lab_id])["Reservations"][0]["Instances"]
    tags = {t["Key"]: t["Value"] for t in raw["Tags"]}
    assert tags["vmlab:lab"] == "flowlab" and raw["ImageId"] == image
    # the host key pinned is the one the lab made at its first connection, not the one in its user data
    user_data = ec2.describe_instance_attribute(InstanceId=lab_id, Attribute="userData")["UserData"]["Value"]
    launch_key = yaml.safe_load(base64.b64decode(user_data))["ssh_keys"]["ed25519_public"]
    on_lab = cloud.current.path("/etc/ssh/ssh_host_ed25519_key.pub").read_text()
    assert record["host_key"].split()[:2] == on_lab.split()[:2] != launch_key.split()[:2]
    timings = json.loads(up.stdout)["timings"]
    print(f"host key replaced in {timings['host_key']:.2f}s of {timings['total']:.2f}s")  # shown with -s

    down = vmlab(env, "down", "flowlab")
    assert down.returncode == 0, down.stderr
    (raw,) = ec2.describe_instances(InstanceIds=[lab_id])["Reservations"][0]["Instances"]
    assert raw["State"]["Name"] == "terminated"
    left = leftovers(ec2)
    assert left["instances"] == left["key_pairs"] == left["groups"] == [], left
    assert not (Path(env["VMLAB_STATE_DIR"]) / "labs" / "flowlab.json").exists()
