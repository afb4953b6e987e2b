"""A minimal vmlab provider whose "instances" are throwaway sandbox hosts (harness/clouds/sandbox.py): a real sshd on
127.0.0.1 each, several at once, no EC2 and no QEMU. An image is the upper dir a stopped sandbox leaves, the root
of the next sandbox; `stop` keeps the disk and `start` boots it again (its keys are on it, as on a VM).

`SandboxProvider` has the base verbs only (tests/integration/test_provider_contract.py); `QuotedSandboxProvider`
adds the `Quotes` capability from a price table (`Cloud.prices`, USD/hour per type), for a class budget.

A JupyterHub under test runs in its own process: `CloudServer` serves one `Cloud` over XML-RPC on 127.0.0.1, and
`RemoteSandboxProvider` (registered in the hub's config as provider "sandbox") calls it, so the test process keeps
the sandboxes, sees every instance and injects faults (`Cloud.hold_boot`: lab names whose sshd never answers;
`Cloud.slow_launch`: lab names whose launch call takes a while).

Example::

    with open_cloud(tmp_path) as cloud, CloudServer(cloud) as server:
        env = {"VMLAB_SANDBOX_CLOUD": server.url}     # for the hub process
        ...
        assert not cloud.instances                     # nothing left
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from xmlrpc.client import ServerProxy
from xmlrpc.server import SimpleXMLRPCServer

from harness.clouds.sandbox import MASKED, Sandbox
from vmlab.providers import PROVIDERS
from vmlab.providers.base import Image, Instance, LaunchSpec, Progress, match_tags

#: the test venv's JupyterLab, which a recipe baked for these labs starts (`-e jupyter=JUPYTER`)
JUPYTER = str(Path(sys.executable).parent / "jupyter")
#: the test venv and its Python where the sandbox masks them: shared read only into a lab so its Jupyter runs
SHARED = tuple(dict.fromkeys(
    p for p in (os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix))
    if any(p == f"/{m}" or p.startswith(f"/{m}/") for m in MASKED)))
BASE = Image(id="host", name="host", state="available", provider="sandbox", user="root")
URL_ENV = "VMLAB_SANDBOX_CLOUD"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


@dataclass
class Cloud:
    """What the sandbox provider knows, shared by every instance of it (the CLI opens a new one per command)."""

    root: Path
    counter: Iterator[int] = field(default_factory=itertools.count)
    instances: dict[str, Instance] = field(default_factory=dict)
    boxes: dict[str, Sandbox] = field(default_factory=dict)
    #: instance or image id -> its layers, the newest first
    layers: dict[str, list[Path]] = field(default_factory=dict)
    images: dict[str, Image] = field(default_factory=dict)
    launched: list[str] = field(default_factory=list)
    #: instance id -> (host key, authorized key) it was launched with, for `start`
    keys: dict[str, tuple[str | None, str]] = field(default_factory=dict)
    #: instance type -> USD per hour (QuotedSandboxProvider)
    prices: dict[str, float] = field(default_factory=dict)
    #: lab names whose sandboxes boot without sshd (SSH refused): a launch that cannot finish
    hold_boot: set[str] = field(default_factory=set)
    #: lab name -> seconds its launch call takes (the instance is listed as pending meanwhile)
    slow_launch: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_image(self, name: str, tags: Mapping[str, str]) -> Image:
        """An image of the test machine itself (one empty layer: its labs get the shared test venv)."""
        image = Image(id=f"simg-{next(self.counter)}", name=name, state="available", provider="sandbox",
                      created=_now(), tags=dict(tags), user="root")
        layer = self.root / image.id
        layer.mkdir()
        self.images[image.id], self.layers[image.id] = image, [layer]
        return image


CLOUD: Cloud | None = None


class SandboxProvider:
    """The base verbs of vmlab.providers.base.Provider and nothing else."""

    name = "sandbox"
    default_base = BASE.id

    def __init__(self, cloud: Cloud | None = None) -> None:
        cloud = cloud or CLOUD
        assert cloud is not None, "open_cloud() registers this provider"
        self.cloud = cloud

    def _boot(self, instance_id: str, name: str, first: bool = True) -> Sandbox:
        """Boot the instance's disk; at its first boot, install the keys it was launched with (cloud-init)."""
        layers = self.cloud.layers[instance_id]
        box = Sandbox(layers=layers, share=SHARED if layers else ()).start()
        self.cloud.boxes[instance_id] = box
        if first:
            box.install_keys(*self.cloud.keys[instance_id])
        if name not in self.cloud.hold_boot:
            box.start_sshd()
        return box

    def launch(self, spec: LaunchSpec) -> Instance:
        image = self.describe_image(spec.image)
        assert image is not None, f"no image {spec.image}"
        with self.cloud.lock:
            iid = f"sbx-{next(self.cloud.counter)}"
            self.cloud.layers[iid] = list(self.cloud.layers.get(image.id, []))
            self.cloud.keys[iid] = (spec.host_key, spec.ssh_public_key)
            self.cloud.launched.append(iid)
            # listed before it boots, as a cloud lists a pending instance: a launch undone now is found
            self.cloud.instances[iid] = Instance(
                id=iid, name=spec.name, state="pending", host=None, port=22, user="root", image=image.id,
                provider=self.name, instance_type=spec.instance_type, tags=dict(spec.tags), launched_at=_now())
        time.sleep(self.cloud.slow_launch.get(spec.name, 0.0))
        box = self._boot(iid, spec.name)
        return self._set(iid, state="running", host=box.host, port=box.port)

    def _set(self, instance_id: str, **changes: Any) -> Instance:
        with self.cloud.lock:
            inst = replace(self.cloud.instances[instance_id], **changes)
            self.cloud.instances[instance_id] = inst
            return inst

    def describe(self, instance_id: str) -> Instance | None:
        return self.cloud.instances.get(instance_id)

    def list_instances(self, tags: Mapping[str, str] | None = None) -> list[Instance]:
        return [i for i in list(self.cloud.instances.values()) if match_tags(i.tags, tags)]

    def _halt(self, instance_id: str) -> Path:
        """Stop the sandbox; its disk (all it wrote) becomes the instance's newest layer."""
        disk = self.cloud.root / f"{instance_id}-{next(self.cloud.counter)}"
        self.cloud.boxes.pop(instance_id).stop(keep=disk)
        self.cloud.layers[instance_id].insert(0, disk)
        return disk

    def stop(self, instance_id: str) -> Instance:
        if instance_id in self.cloud.boxes:
            self._halt(instance_id)
        return self._set(instance_id, state="stopped", host=None)

    def start(self, instance_id: str) -> Instance:
        inst = self.cloud.instances[instance_id]
        if inst.state == "running":
            return inst
        box = self._boot(instance_id, inst.name, first=False)
        return self._set(instance_id, state="running", host=box.host, port=box.port, launched_at=_now())

    def terminate(self, instance_id: str) -> None:
        box = self.cloud.boxes.pop(instance_id, None)
        if box is not None:
            box.stop()
        self.cloud.instances.pop(instance_id, None)

    def create_image(self, instance_id: str, name: str, tags: Mapping[str, str],
                     progress: Progress | None = None) -> Image:
        self._halt(instance_id)
        image = Image(id=f"simg-{next(self.cloud.counter)}", name=name, state="available", provider=self.name,
                      created=_now(), tags=dict(tags), user="root")
        self.cloud.images[image.id] = image
        self.cloud.layers[image.id] = list(self.cloud.layers[instance_id])
        return image

    def describe_image(self, image: str) -> Image | None:
        if image == BASE.id:
            return BASE
        return next((i for i in self.cloud.images.values() if image in (i.id, i.name)), None)

    def list_images(self, tags: Mapping[str, str] | None = None) -> list[Image]:
        return [i for i in self.cloud.images.values() if match_tags(i.tags, tags)]

    def delete_image(self, image_id: str) -> None:
        self.cloud.images.pop(image_id, None)


@dataclass
class TableOffer:
    """An offer from the cloud's price table (on-demand only)."""

    on_demand: float | None
    spot: Mapping[str, float] = field(default_factory=dict)

    @property
    def spot_low(self) -> float | None:
        return None

    def hourly(self, spot: bool) -> float | None:
        return None if spot else self.on_demand

    def describe(self) -> str:
        return f"${self.on_demand}/hour" if self.on_demand is not None else "price unknown"

    def to_json(self) -> dict[str, Any]:
        return {"on_demand": self.on_demand}


class QuotedSandboxProvider(SandboxProvider):
    """The base verbs plus `Quotes`, from `Cloud.prices`."""

    def offer(self, instance_type: str | None, image: str | None = None, spot: bool = False) -> TableOffer:
        return TableOffer(self.list_price(instance_type) if instance_type else None)

    def list_price(self, instance_type: str) -> float | None:
        return self.cloud.prices.get(instance_type)


@contextmanager
def open_cloud(name: str = "sandbox", quotes: bool = False) -> Iterator[Cloud]:
    """A fresh cloud, its provider registered as `name`; every sandbox still running is stopped at the end."""
    global CLOUD
    CLOUD = Cloud(Path(tempfile.mkdtemp(prefix="vmlab-sandbox-cloud-")))
    PROVIDERS[name] = f"{__name__}:{'QuotedSandboxProvider' if quotes else 'SandboxProvider'}"
    try:
        yield CLOUD
    finally:
        PROVIDERS.pop(name, None)
        for box in list(CLOUD.boxes.values()):
            box.stop()
        shutil.rmtree(CLOUD.root, ignore_errors=True)
        CLOUD = None


# ---- across processes: the cloud served to a hub under test ------------------------------------------------
class _Server(ThreadingMixIn, SimpleXMLRPCServer):
    daemon_threads = True


class CloudServer:
    """A `QuotedSandboxProvider` of `cloud` over XML-RPC on 127.0.0.1 (`.url`), one thread per call."""

    def __init__(self, cloud: Cloud) -> None:
        provider = QuotedSandboxProvider(cloud)
        self._server = _Server(("127.0.0.1", 0), logRequests=False, allow_none=True)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"

        def launch(spec: dict[str, Any]) -> dict[str, Any]:
            return asdict(provider.launch(LaunchSpec(**spec)))

        def one(verb: Any) -> Any:
            def call(arg: str) -> dict[str, Any] | None:
                value = verb(arg)
                return asdict(value) if value is not None else None

            return call

        self._server.register_function(launch, "launch")
        for verb in ("describe", "stop", "start", "describe_image"):
            self._server.register_function(one(getattr(provider, verb)), verb)
        self._server.register_function(lambda tags: [asdict(i) for i in provider.list_instances(tags)],
                                       "list_instances")
        self._server.register_function(lambda tags: [asdict(i) for i in provider.list_images(tags)], "list_images")
        self._server.register_function(provider.terminate, "terminate")
        self._server.register_function(provider.list_price, "list_price")
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="sandbox-cloud-rpc")

    def __enter__(self) -> CloudServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def _instance(raw: dict[str, Any] | None) -> Instance | None:
    return Instance(**raw) if raw else None


def _image(raw: dict[str, Any] | None) -> Image | None:
    return Image(**{**raw, "shared_with": tuple(raw["shared_with"])}) if raw else None


class RemoteSandboxProvider:
    """The provider a hub process uses: each verb a call to the test's `CloudServer` (`$VMLAB_SANDBOX_CLOUD`)."""

    name = "sandbox"
    default_base = BASE.id

    def __init__(self) -> None:
        self._rpc = ServerProxy(os.environ[URL_ENV], allow_none=True)

    def launch(self, spec: LaunchSpec) -> Instance:
        inst = _instance(self._rpc.launch(asdict(spec)))
        assert inst is not None
        return inst

    def describe(self, instance_id: str) -> Instance | None:
        return _instance(self._rpc.describe(instance_id))

    def list_instances(self, tags: Mapping[str, str] | None = None) -> list[Instance]:
        return [i for i in map(_instance, self._rpc.list_instances(dict(tags or {}))) if i is not None]

    def stop(self, instance_id: str) -> Instance:
        inst = _instance(self._rpc.stop(instance_id))
        assert inst is not None
        return inst

    def start(self, instance_id: str) -> Instance:
        inst = _instance(self._rpc.start(instance_id))
        assert inst is not None
        return inst

    def terminate(self, instance_id: str) -> None:
        self._rpc.terminate(instance_id)

    def create_image(self, instance_id: str, name: str, tags: Mapping[str, str],
                     progress: Progress | None = None) -> Image:
        raise NotImplementedError("the hub tests bake no images")

    def describe_image(self, image: str) -> Image | None:
        return _image(self._rpc.describe_image(image))

    def list_images(self, tags: Mapping[str, str] | None = None) -> list[Image]:
        return [i for i in map(_image, self._rpc.list_images(dict(tags or {}))) if i is not None]

    def delete_image(self, image_id: str) -> None:
        raise NotImplementedError("the hub tests delete no images")

    def offer(self, instance_type: str | None, image: str | None = None, spot: bool = False) -> TableOffer:
        return TableOffer(self.list_price(instance_type) if instance_type else None)

    def list_price(self, instance_type: str) -> float | None:
        price = self._rpc.list_price(instance_type)
        return float(price) if price is not None else None
