"""Nothing leaks, whichever AWS call fails and whenever the user presses Ctrl-C: `vmlab bake`, `up` and `down` on
EC2 (moto behind a FaultProxy), with sandbox hosts as instances (harness/clouds/ec2cloud.py), through the real CLI.

A clean run of each command first records the AWS calls it makes; then, for every index i, a run whose call i
fails with an AWS error (InternalError, never retried: AWS_MAX_ATTEMPTS=1) must exit 1 with one error line and
leave no vmlab resource behind, except the product once it is complete:

- bake: the image is the product once `create_image` has returned it available and tagged. A call failing
  after that belongs to removing the builder, which tries again (vmlab/workflows/cleanup.py): the bake
  succeeds, the image stays and nothing else does. Before that, the bake fails and leaves nothing, image included.
- up: the lab is the product once JupyterLab answered, which is after the last AWS call, so every failing call
  fails `up` and leaves nothing; except DescribeImageAttribute, which only reads who an image is shared with
  and is allowed to fail (a public base image refuses it).
- down: a failing call fails `down` and keeps the local record, so `vmlab down` again finishes the job.

Ctrl-C (SIGINT to the CLI) while it waits for the instance's address, for SSH and for the image exits 130 and
leaves nothing. The waits are held open by the proxy (one describe call held) or by a sandbox that never starts
sshd.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import boto3
import pytest

from harness.clouds.ec2cloud import SandboxCloud, census, leftovers
from harness.emulators.moto import MotoServer
from harness.faults.awsfaults import FaultProxy
from tests.integration.test_ec2_flow import CIDR, SHARED, bake_args, cli_env, seed_base
from vmlab import keys
from vmlab.providers.base import LaunchSpec
from vmlab.providers.ec2 import Ec2Provider
from vmlab.state import LabRecord, LabStore
from vmlab.workflows.labpower import down

pytestmark = [pytest.mark.moto, pytest.mark.sshd]

NOTHING: dict[str, list[str]] = {"instances": [], "key_pairs": [], "groups": [], "volumes": [], "images": [],
                                 "snapshots": []}


@dataclass
class Rig:
    ec2: Any
    proxy: FaultProxy
    cloud: SandboxCloud
    env: dict[str, str]
    ami: str

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "vmlab", *args]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args), env=self.env, capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)

    def settle(self) -> dict[str, list[str]]:
        """What is left once the command is over (the cloud halts the sandbox of a terminated instance)."""
        deadline = time.monotonic() + 5
        while self.cloud.current is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        return leftovers(self.ec2)

    def remove_image(self, image_id: str) -> None:
        (image,) = self.ec2.describe_images(ImageIds=[image_id])["Images"]
        self.ec2.deregister_image(ImageId=image_id)
        for m in image["BlockDeviceMappings"]:
            if "Ebs" in m:
                self.ec2.delete_snapshot(SnapshotId=m["Ebs"]["SnapshotId"])

    def purge(self, keep: list[str]) -> None:
        """Remove whatever a failed case leaked (images but `keep`), so the next case starts clean."""
        left = leftovers(self.ec2)
        for image in left["images"]:
            if image not in keep:
                self.remove_image(image)
        if left["instances"]:
            self.ec2.terminate_instances(InstanceIds=left["instances"])
        for group in left["groups"]:
            self.ec2.delete_security_group(GroupId=group)
        for key in left["key_pairs"]:
            self.ec2.delete_key_pair(KeyName=key)

    def fresh(self) -> None:
        self.proxy.reset()
        self.cloud.boot = True


@pytest.fixture(scope="module")
def rig(moto_server: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    moto_server.reset()
    ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=moto_server.endpoint)
    ami = seed_base(ec2)
    with FaultProxy(moto_server.endpoint) as proxy, SandboxCloud(moto_server.endpoint, share=SHARED) as cloud:
        env = cli_env(proxy.endpoint, cloud.port, tmp_path_factory.mktemp("state"))
        yield Rig(ec2, proxy, cloud, env, ami)
        assert not cloud.errors


@pytest.fixture(scope="module")
def image(rig: Rig) -> str:
    """An image of the test recipe for the up, down and Ctrl-C tests (baked once, without faults)."""
    found = leftovers(rig.ec2)["images"]
    if found:
        return str(found[0])
    rig.fresh()
    baked = rig.run(*bake_args(rig.ami))
    assert baked.returncode == 0, baked.stderr
    (made,) = leftovers(rig.ec2)["images"]
    return str(made)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vmlab: error: "), result.stderr
    return lines[0]


def each_call(rig: Rig, args: list[str], check: Callable[[int, str, subprocess.CompletedProcess[str]], None],
              before: Callable[[], None] = lambda: None) -> list[str]:
    """Run `args` once cleanly to learn its calls, then once per call with that call failing; `check` judges
    each faulty run. Returns the clean run's calls."""
    rig.fresh()
    before()
    clean = rig.run(*args)
    assert clean.returncode == 0, clean.stderr
    calls = rig.proxy.calls
    check(-1, "", clean)
    problems = []
    keep = leftovers(rig.ec2)["images"]
    for index, action in enumerate(calls):
        rig.fresh()
        before()
        rig.proxy.fail_call(index)
        result = rig.run(*args)
        try:
            seen = rig.proxy.calls
            assert seen[:index + 1] == calls[:index + 1] and rig.proxy.records[index].injected, \
                f"the calls before the fault changed: {seen}"
            check(index, action, result)
        except AssertionError as exc:
            problems.append(f"call {index} ({action}): {exc}\n{result.stdout[-800:]}\n{result.stderr[-800:]}")
            rig.purge(keep)
    assert not problems, "\n\n".join(problems)
    return calls


def test_bake_leaks_nothing_whichever_call_fails(rig: Rig) -> None:
    args = bake_args(rig.ami)
    made_at: list[int] = []

    def check(index: int, action: str, result: subprocess.CompletedProcess[str]) -> None:
        left = rig.settle()
        if index < 0:  # the clean run: where the image is complete, i.e. the final DescribeImages of create_image
            made_at.append(max(i for i, c in enumerate(rig.proxy.calls[:rig.proxy.calls.index("TerminateInstances")])
                               if c == "DescribeImages"))
        if index < 0 or index > made_at[0]:
            assert result.returncode == 0, result.stderr
            (image,) = left["images"]
            rig.remove_image(image)
            left = leftovers(rig.ec2)
        else:
            assert result.returncode == 1, result.stdout
            assert "InternalError" in one_error_line(result) or "injected" in result.stderr
        assert left == NOTHING, left

    calls = each_call(rig, args, check)
    assert "CreateImage" in calls and "TerminateInstances" in calls


def test_a_builder_that_cannot_be_removed_fails_the_bake_loudly(rig: Rig) -> None:
    """When every attempt to terminate the builder fails, the image (the product) is kept, and the bake exits 1
    with one line naming the builder instead of reporting success over a leaked, paid VM."""
    rig.fresh()
    existing = leftovers(rig.ec2)["images"]
    rig.proxy.fail("TerminateInstances", nth=None, code="UnauthorizedOperation", status=403)
    result = rig.run(*bake_args(rig.ami, "--force"))
    left = rig.settle() if rig.cloud.current is None else leftovers(rig.ec2)
    rig.proxy.reset()
    try:
        assert result.returncode == 1, result.stdout
        line = one_error_line(result)
        (builder,) = left["instances"]
        (image,) = set(left["images"]) - set(existing)
        assert f"({image}) is ready, but cleaning up failed: builder {builder}" in line and "vmlab gc" in line
    finally:
        rig.purge(keep=existing)
        rig.settle()


def test_up_leaks_nothing_whichever_call_fails(rig: Rig, image: str) -> None:
    with_image = {**NOTHING, "images": [image], "snapshots": leftovers(rig.ec2)["snapshots"]}
    state = Path(rig.env["VMLAB_STATE_DIR"])

    def check(index: int, action: str, result: subprocess.CompletedProcess[str]) -> None:
        if index < 0 or action == "DescribeImageAttribute":
            assert result.returncode == 0, result.stderr
            assert (state / "labs" / "faulty.json").is_file()
            down = rig.run("down", "faulty")
            assert down.returncode == 0, down.stderr
        else:
            assert result.returncode == 1, result.stdout
            one_error_line(result)
            assert not (state / "labs" / "faulty.json").exists()
            assert not (state / "labs" / "keys" / "faulty_ed25519").exists()
        assert rig.settle() == with_image

    calls = each_call(rig, ["up", "faulty", "--provider", "ec2", "--image", image], check)
    assert "RunInstances" in calls


def test_down_fails_cleanly_and_a_second_down_finishes(rig: Rig, image: str) -> None:
    with_image = {**NOTHING, "images": [image], "snapshots": leftovers(rig.ec2)["snapshots"]}
    state = Path(rig.env["VMLAB_STATE_DIR"])

    def make_lab() -> None:
        """Lab "gone" as `vmlab up` leaves it (instance, key pair, security group, key, record), made in this
        process with vmlab's own provider and store: `down` is what is under test, a JupyterLab start is not."""
        client, host = keys.generate("lab"), keys.generate("host")
        inst = Ec2Provider().launch(LaunchSpec(name="gone", image=image, ssh_public_key=client.public,
                                               host_key=host.private, ssh_cidr=CIDR,
                                               tags={"vmlab:lab": "gone", "vmlab:run": "up-faults"}))
        store = LabStore(state / "labs")
        key_file = client.save(store.key_path("gone"))
        store.put(LabRecord(name="gone", provider="ec2", instance_id=inst.id, image=image, user=inst.user,
                            key_file=str(key_file), host_key=host.public, token="t", host=inst.host, port=inst.port))

    def check(index: int, action: str, result: subprocess.CompletedProcess[str]) -> None:
        if index >= 0:
            assert result.returncode == 1, result.stdout
            one_error_line(result)
            assert (state / "labs" / "gone.json").is_file()  # kept, so `down` can be run again
            # `vmlab down` again, in this process (no fault; moto directly) to keep the suite short
            down(Ec2Provider(), "gone", store=LabStore(state / "labs"))
        assert not (state / "labs" / "gone.json").exists()
        assert rig.settle() == with_image

    each_call(rig, ["down", "gone"], check, before=make_lab)


def interrupt(rig: Rig, args: list[str], until: Callable[[], bool],
              sig: signal.Signals = signal.SIGINT) -> subprocess.CompletedProcess[str]:
    """Start the CLI, wait until `until()` says it is in the wait, send `sig` (Ctrl-C by default), return how it
    ended."""
    proc = subprocess.Popen(rig.argv(*args), env=rig.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, stdin=subprocess.DEVNULL)
    try:
        assert until(), "the command never reached the wait"
        time.sleep(0.3)
        assert proc.poll() is None, "the command did not wait"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


WAITS = {
    # wait name: (how to hold the wait, how to see that the command is in it)
    "address": (lambda rig, describes: rig.proxy.delay("DescribeInstances", 60, nth=describes),
                lambda rig, describes: rig.proxy.wait_for("DescribeInstances", describes)),
    "ssh": (lambda rig, describes: setattr(rig.cloud, "boot", False),
            lambda rig, describes: rig.proxy.wait_for("DescribeInstances", describes + 1) and bool(rig.cloud.seen)),
    # with --force: the base image is the first DescribeImages, the wait for the new image the second
    "image": (lambda rig, describes: rig.proxy.delay("DescribeImages", 60, nth=2),
              lambda rig, describes: rig.proxy.wait_for("DescribeImages", 2)),
}


@pytest.mark.parametrize("command,wait", [("bake", "address"), ("bake", "ssh"), ("bake", "image"),
                                          ("up", "address"), ("up", "ssh")])
def test_ctrl_c_in_a_wait_leaks_nothing(rig: Rig, image: str, command: str, wait: str) -> None:
    rig.fresh()
    before = leftovers(rig.ec2)
    if command == "bake":
        args, describes = bake_args(rig.ami, "--force"), 1  # the first DescribeInstances is the address wait
    else:
        args, describes = ["up", "ctrlc", "--provider", "ec2", "--image", image], 2
    hold, reached = WAITS[wait]
    hold(rig, describes)
    result = interrupt(rig, args, lambda: reached(rig, describes))
    assert result.returncode == 130, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "vmlab: interrupted"
    rig.proxy.reset()  # the held call goes on to moto later: it only reads
    assert rig.settle() == before
    assert not (Path(rig.env["VMLAB_STATE_DIR"]) / "labs" / "ctrlc.json").exists()


@pytest.mark.parametrize("first,second", [(signal.SIGINT, signal.SIGINT), (signal.SIGTERM, signal.SIGHUP),
                                          (signal.SIGHUP, signal.SIGTERM)])
def test_a_second_signal_does_not_interrupt_the_undo_of_a_launch(rig: Rig, first: signal.Signals,
                                                                 second: signal.Signals) -> None:
    """Ctrl-C (or SIGTERM, SIGHUP) in the address wait starts removing what the launch made; a second signal while
    that removal waits on AWS must not cut it short (the instance, its key pair and group would leak)."""
    rig.fresh()
    before = leftovers(rig.ec2)
    rig.proxy.delay("DescribeInstances", 60, nth=1)  # the address wait
    rig.proxy.delay("DescribeInstances", 3, nth=2)  # the undo's first look at the instance
    proc = subprocess.Popen(rig.argv(*bake_args(rig.ami, "--force")), env=rig.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        assert rig.proxy.wait_for("DescribeInstances", 1)
        time.sleep(0.3)
        proc.send_signal(first)
        assert rig.proxy.wait_for("DescribeInstances", 2)
        time.sleep(0.3)
        proc.send_signal(second)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "TerminateInstances" in rig.proxy.calls
    rig.proxy.reset()
    assert proc.returncode == 128 + first, err
    assert rig.settle() == before, out + err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_in_the_ssh_wait_of_up_leak_nothing(rig: Rig, image: str, sig: signal.Signals) -> None:
    """A cancelled CI job (SIGTERM) or a closed terminal (SIGHUP) while `up --spot --sync` waits for SSH removes
    the instance, its spot request, key pair, security group, volume, IAM role and instance profile, and the local
    key and record: every kind counted before and after."""
    state = Path(rig.env["VMLAB_STATE_DIR"])
    iam = boto3.client("iam", region_name="us-east-1", endpoint_url=rig.ec2.meta.endpoint_url)
    rig.fresh()
    rig.cloud.boot = False
    before = census(rig.ec2, iam, state)
    seen = len(rig.cloud.seen)
    args = ["up", "hangup", "--provider", "ec2", "--image", image, "--spot", "--sync", "s3://vmlab-signals/alice"]
    quick_iam = replace(rig, env={**rig.env, "VMLAB_IAM_SETTLE_SECONDS": "0"})
    result = interrupt(quick_iam, args, lambda: wait_until(lambda: len(rig.cloud.seen) > seen), sig=sig)
    assert result.returncode == 128 + sig, result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"vmlab: interrupted by {sig.name}"
    assert {"RunInstances", "CreateRole", "CreateInstanceProfile", "TerminateInstances",
            "DeleteRole", "DeleteInstanceProfile"} <= set(rig.proxy.calls), rig.proxy.calls
    rig.proxy.reset()
    assert rig.settle() == {k: v for k, v in before.items() if k in NOTHING}
    assert census(rig.ec2, iam, state) == before


def wait_until(ready: Callable[[], bool], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_after_a_killed_up_the_hint_works_and_down_adopts_the_lab(rig: Rig, image: str) -> None:
    """SIGKILL (nothing can be undone) in the SSH wait leaves the instance, key pair, group, volume and the lab's
    key file without a record. `vmlab up NAME` then names a `vmlab down` that works: it finds the instance by
    its tags and removes it all, leaving what was there before."""
    state = Path(rig.env["VMLAB_STATE_DIR"])
    iam = boto3.client("iam", region_name="us-east-1", endpoint_url=rig.ec2.meta.endpoint_url)
    rig.fresh()
    rig.cloud.boot = False
    before = census(rig.ec2, iam, state)
    seen = len(rig.cloud.seen)
    killed = interrupt(rig, ["up", "killed", "--provider", "ec2", "--image", image],
                       lambda: wait_until(lambda: len(rig.cloud.seen) > seen), sig=signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    left = census(rig.ec2, iam, state)
    assert len(left["instances"]) == len(before["instances"]) + 1 and left != before
    again = rig.run("up", "killed", "--provider", "ec2", "--image", image)
    line = one_error_line(again)
    assert "exists" in line and "no record of it" in line
    hint = line[line.index("`") + 1:line.rindex("`")]
    assert hint == "vmlab down killed --provider ec2 --region us-east-1", line
    rig.cloud.boot = True
    down = rig.run(*hint.split()[1:])
    assert down.returncode == 0, down.stderr
    assert "found by its tags" in down.stdout and "removed instance" in down.stdout
    assert rig.settle() == {k: v for k, v in before.items() if k in NOTHING}
    assert census(rig.ec2, iam, state) == before
    nothing = rig.run("down", "killed", "--provider", "ec2", "--region", "us-east-1")
    assert nothing.returncode == 2 and "nor an instance tagged as lab killed in ec2 us-east-1" in nothing.stderr
