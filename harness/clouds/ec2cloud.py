"""Boot moto's instances for real: each instance vmlab launches in moto becomes a throwaway `Sandbox` host.

moto only records instances. `SandboxCloud` watches it (directly, not through a FaultProxy, so the calls a test
counts are vmlab's alone) and, for each new live instance, plays EC2 and cloud-init: starts
a sandbox on the fixed `port` (what VMLAB_EC2_SSH_PORT points at), installs the host key from the instance's user
data and the public key of its key pair, and starts sshd. When the instance is terminated the sandbox goes and
its upper dir is kept as that instance's disk; an instance launched from an image made of it (`vmlab:source-
instance`) boots from that disk, so `vmlab up` runs on what `vmlab bake` left behind.

Before booting, it records what EC2 held for the instance (`seen[instance_id]`: the raw instance, its security
groups and volumes), so tests can check how a short-lived builder was locked down. `boot = False` leaves new
instances without sshd (SSH refused) to hold vmlab in its SSH wait; `boot_delay` seconds between the instance
appearing and sshd answering stand in for a real boot (a benchmark's knob). `appeared[iid]` and `ssh_ready[iid]`
are the `time.monotonic()` of both moments.

Example::

    with SandboxCloud(moto.endpoint) as cloud:   # then VMLAB_EC2_SSH_PORT=cloud.port
        run("vmlab bake ...")
        assert not cloud.errors
"""

from __future__ import annotations

import base64
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from harness.clouds.sandbox import Sandbox
from harness.emulators.sshd import free_port

LIVE = ["pending", "running"]


def _tags(raw: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in raw.get("Tags", [])}


class SandboxCloud:
    """A watcher thread over one moto endpoint; `share` (read-only test-machine paths) is given to the sandboxes
    of instances launched from an image of another instance, never to builders (their secret scan would walk it).
    Attributes: `port`, `current` (the live sandbox or None), `booted` (instance ids, in order), `seen`,
    `disks` (instance id -> kept upper dir), `errors` (exceptions from the thread, as text)."""

    def __init__(self, endpoint: str, share: tuple[str, ...] = (), region: str = "us-east-1",
                 poll: float = 0.1) -> None:
        import boto3

        self.ec2 = boto3.client("ec2", region_name=region, endpoint_url=endpoint)
        self.share = share
        self.poll = poll
        self.port = free_port()
        self.boot = True
        self.boot_delay = 0.0
        self.appeared: dict[str, float] = {}
        self.ssh_ready: dict[str, float] = {}
        self.current: Sandbox | None = None
        self.current_id: str | None = None
        self.booted: list[str] = []
        self.seen: dict[str, dict[str, Any]] = {}
        self.disks: dict[str, Path] = {}
        self.layers: dict[str, list[Path]] = {}
        self.errors: list[str] = []
        self._dir = Path(tempfile.mkdtemp(prefix="vmlab-disks-"))
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- life cycle -------------------------------------------------------------------------------------------
    def start(self) -> SandboxCloud:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._watch, name="sandbox-cloud", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.halt()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> SandboxCloud:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def halt(self) -> None:
        """Stop the current sandbox (its instance "powers off"); its upper dir is kept as the instance's disk."""
        with self._lock:
            box, iid = self.current, self.current_id
            self.current = self.current_id = None
            if box is not None and iid is not None:
                disk = self._dir / iid
                shutil.rmtree(disk, ignore_errors=True)
                box.stop(keep=disk)
                self.disks[iid] = disk

    # -- the watcher ------------------------------------------------------------------------------------------
    def _watch(self) -> None:
        transient = 0
        while not self._stopping.is_set():
            try:
                self._tick()
                transient = 0
            except Exception as exc:  # noqa: BLE001 - reported to the test, the watcher goes on
                # moto, loaded by 2 cores and a test terminating what the watcher reads, sometimes answers one
                # read with an internal error page: tried again on the next tick, reported only if it persists
                transient = transient + 1 if _server_error(exc) else 0
                if not transient or transient > 20:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stopping.wait(self.poll)

    def _tick(self) -> None:
        reservations = self.ec2.describe_instances(Filters=[{"Name": "instance-state-name", "Values": LIVE}])
        live = {i["InstanceId"]: i for r in reservations["Reservations"] for i in r["Instances"]}
        if self.current_id is not None and self.current_id not in live:
            self.halt()
        for iid, raw in live.items():
            if iid not in self.seen and self.current_id is None:
                self.appeared[iid] = time.monotonic()
                self._observe(iid, raw)
                if self.boot:
                    self._boot(iid, raw)

    def _observe(self, iid: str, raw: dict[str, Any]) -> None:
        for _ in range(50):  # moto may list a new instance before its root volume is attached
            if any("Ebs" in m for m in raw.get("BlockDeviceMappings", [])):
                break
            time.sleep(0.02)
            raw = self.ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
        # an instance undone within moments (a fault, Ctrl-C) may take its volume and group with it before this
        # look: what is gone by then is recorded as gone, not as an error of the watcher
        groups = _unless_gone(lambda: self.ec2.describe_security_groups(
            GroupIds=[g["GroupId"] for g in raw.get("SecurityGroups", [])])["SecurityGroups"])
        ids = [m["Ebs"]["VolumeId"] for m in raw.get("BlockDeviceMappings", []) if "Ebs" in m]
        volumes = _unless_gone(lambda: self.ec2.describe_volumes(VolumeIds=ids)["Volumes"]) if ids else []
        self.seen[iid] = {"instance": raw, "groups": groups, "volumes": volumes}

    def _boot(self, iid: str, raw: dict[str, Any]) -> None:
        user_data = self.ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")["UserData"]
        cloud = yaml.safe_load(base64.b64decode(user_data["Value"])) if user_data.get("Value") else None
        pairs = _unless_gone(lambda: self.ec2.describe_key_pairs(KeyNames=[raw["KeyName"]],
                                                                 IncludePublicKey=True)["KeyPairs"])
        if not pairs:
            return  # the launch was undone (a fault, a signal) before its instance could boot: nothing to play
        (pair,) = pairs
        layers: list[Path] = []
        images = self.ec2.describe_images(ImageIds=[raw["ImageId"]])["Images"]
        source = _tags(images[0]).get("vmlab:source-instance") if images else None
        if source in self.disks:
            layers = [self.disks[source], *self.layers.get(source, [])]
        box = Sandbox(layers=layers, share=self.share if layers else (), port=self.port).start()
        with self._lock:
            self.current, self.current_id = box, iid
            self.layers[iid] = layers
            self.booted.append(iid)
        host_key = (cloud or {}).get("ssh_keys", {}).get("ed25519_private")  # else sshd's own, as on first boot
        box.install_keys(host_key, pair["PublicKey"])
        self._stopping.wait(max(0.0, self.appeared[iid] + self.boot_delay - time.monotonic()))
        box.start_sshd()
        self.ssh_ready[iid] = time.monotonic()

    def wait_booted(self, count: int = 1, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while len(self.booted) < count:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True


def leftovers(ec2: Any) -> dict[str, list[str]]:
    """Everything vmlab may have created that still exists in moto (terminated instances and deleted volumes do not
    count; images and snapshots only when vmlab-tagged, so seeded base AMIs are not counted)."""
    reservations = ec2.describe_instances(Filters=[
        {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}])["Reservations"]

    def tagged(call: Any, field: str, key: str, **kw: Any) -> list[str]:
        found: dict[str, None] = {}
        for tag in ("vmlab:launch", "vmlab:source-instance", "vmlab:run"):  # moto ANDs a multi-valued tag-key
            for item in call(Filters=[{"Name": "tag-key", "Values": [tag]}], **kw)[field]:
                if item.get("State") not in ("deleted", "deregistered"):
                    found[item[key]] = None
        return list(found)

    return {
        "instances": [i["InstanceId"] for r in reservations for i in r["Instances"]],
        "key_pairs": [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]],
        "groups": [g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]
                   if g["GroupName"] != "default"],
        "volumes": [v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]],
        "images": tagged(ec2.describe_images, "Images", "ImageId", Owners=["self"]),
        "snapshots": tagged(ec2.describe_snapshots, "Snapshots", "SnapshotId", OwnerIds=["self"]),
    }


def census(ec2: Any, iam: Any, state_dir: Path) -> dict[str, list[str]]:
    """Every kind of thing vmlab may make, counted: `leftovers` plus open or active spot requests, IAM roles and
    instance profiles, and the local files a launch writes (lab records, lab keys, temporary builder keys)."""
    spot = ec2.describe_spot_instance_requests(Filters=[{"Name": "state", "Values": ["open", "active"]}])
    files = sorted(str(p.relative_to(state_dir)) for pattern in ("labs/*.json", "labs/keys/*", "tmp/*")
                   for p in state_dir.glob(pattern))
    return {**leftovers(ec2),
            "spot_requests": [r["SpotInstanceRequestId"] for r in spot["SpotInstanceRequests"]],
            "roles": [r["RoleName"] for r in iam.list_roles()["Roles"]],
            "instance_profiles": [p["InstanceProfileName"] for p in iam.list_instance_profiles()["InstanceProfiles"]],
            "local_files": files}


def _server_error(exc: BaseException) -> bool:
    """An answer of the emulator that says it failed (HTTP 5xx, or an error page instead of XML)."""
    from botocore.exceptions import ClientError, ResponseParserError

    if isinstance(exc, ResponseParserError):
        return True
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) if isinstance(exc, ClientError) else 0
    return int(status) >= 500


def _unless_gone(describe: Callable[[], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The result of a describe call, or [] when what it asked about no longer exists (*.NotFound)."""
    from botocore.exceptions import ClientError

    try:
        return describe()
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code", "")).endswith("NotFound"):
            return []
        raise
