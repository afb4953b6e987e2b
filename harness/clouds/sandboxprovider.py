"""A minimal provider for tests: the base verbs of vmlab.providers.base.Provider and no capability, whose
"instances" are throwaway sandbox hosts with a real sshd on 127.0.0.1 (harness/clouds/sandbox.py) and whose images
are the upper dirs a stopped sandbox leaves (the root of the next sandbox). No EC2, no QEMU.

`sandbox_cloud()` registers it as provider "sandbox" (the CLI opens a new provider object per command; they all
share one `Cloud`) and removes every box it made on exit; tests get it as the `cloud` fixture
(tests/integration/conftest.py).

Example::

    with sandbox_cloud() as cloud:
        inst = SandboxProvider().launch(LaunchSpec("lab", "host", public_key, host_key=host_private))
        cloud.boxes[inst.id].path("/root")          # the instance's files, seen from the test
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from harness.clouds.sandbox import MASKED, Sandbox, lab_port_turn
from vmlab import lab
from vmlab.providers import PROVIDERS
from vmlab.providers.base import Image, Instance, LaunchSpec, Progress, match_tags

#: the test venv's JupyterLab, which a recipe baked for these labs starts (shared read only into them: SHARED)
JUPYTER = str(Path(sys.executable).parent / "jupyter")
#: the test venv and its Python where the sandbox masks them: shared read only into a lab so JupyterLab runs
SHARED = tuple(dict.fromkeys(
    p for p in (os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix))
    if any(p == f"/{m}" or p.startswith(f"/{m}/") for m in MASKED)))
BASE = Image(id="host", name="host", state="available", provider="sandbox", user="root")


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


CLOUD: Cloud | None = None


class SandboxProvider:
    """The base verbs of vmlab.providers.base.Provider and nothing else."""

    name = "sandbox"
    default_base = BASE.id

    def __init__(self) -> None:
        assert CLOUD is not None, "sandbox_cloud() registers this provider"
        self.cloud = CLOUD

    def _boot(self, instance_id: str, host_key: str | None, public_key: str) -> Sandbox:
        layers = self.cloud.layers[instance_id]
        box = Sandbox(layers=layers, share=SHARED if layers else ()).start()
        box.install_keys(host_key, public_key)
        box.start_sshd()
        self.cloud.boxes[instance_id] = box
        return box

    def launch(self, spec: LaunchSpec) -> Instance:
        image = self.describe_image(spec.image)
        assert image is not None, f"no image {spec.image}"
        iid = f"sbx-{next(self.cloud.counter)}"
        self.cloud.layers[iid] = list(self.cloud.layers.get(image.id, []))
        box = self._boot(iid, spec.host_key, spec.ssh_public_key)
        inst = Instance(id=iid, name=spec.name, state="running", host=box.host, port=box.port, user="root",
                        image=image.id, provider=self.name, instance_type=spec.instance_type, tags=dict(spec.tags),
                        launched_at=dt.datetime.now(dt.timezone.utc).isoformat())
        self.cloud.instances[iid] = inst
        self.cloud.launched.append(iid)
        return inst

    def describe(self, instance_id: str) -> Instance | None:
        return self.cloud.instances.get(instance_id)

    def list_instances(self, tags: Mapping[str, str] | None = None) -> list[Instance]:
        return [i for i in self.cloud.instances.values() if match_tags(i.tags, tags)]

    def _halt(self, instance_id: str) -> Path:
        """Stop the sandbox; its disk (all it wrote) becomes the instance's newest layer."""
        disk = self.cloud.root / f"{instance_id}-{next(self.cloud.counter)}"
        self.cloud.boxes.pop(instance_id).stop(keep=disk)
        self.cloud.layers[instance_id].insert(0, disk)
        return disk

    def stop(self, instance_id: str) -> Instance:
        self._halt(instance_id)
        inst = replace(self.cloud.instances[instance_id], state="stopped")
        self.cloud.instances[instance_id] = inst
        return inst

    def start(self, instance_id: str) -> Instance:
        raise NotImplementedError("not needed by these tests: a sandbox restarted would need its keys again")

    def terminate(self, instance_id: str) -> None:
        box = self.cloud.boxes.pop(instance_id, None)
        if box is not None:
            box.stop()
        self.cloud.instances.pop(instance_id, None)

    def create_image(self, instance_id: str, name: str, tags: Mapping[str, str],
                     progress: Progress | None = None) -> Image:
        self._halt(instance_id)
        image = Image(id=f"simg-{next(self.cloud.counter)}", name=name, state="available", provider=self.name,
                      created=dt.datetime.now(dt.timezone.utc).isoformat(), tags=dict(tags), user="root")
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


@contextmanager
def sandbox_cloud() -> Iterator[Cloud]:
    """Provider "sandbox" registered, with a fresh Cloud, while the block runs; every box stopped after it."""
    global CLOUD
    CLOUD = Cloud(Path(tempfile.mkdtemp(prefix="vmlab-sandbox-cloud-")))
    PROVIDERS["sandbox"] = f"{__name__}:SandboxProvider"
    try:
        with lab_port_turn(lab.PORT):  # the sandbox's JupyterLab listens on the machine's 127.0.0.1:8888
            yield CLOUD
    finally:
        PROVIDERS.pop("sandbox", None)
        for box in CLOUD.boxes.values():
            box.stop()
        shutil.rmtree(CLOUD.root, ignore_errors=True)
        CLOUD = None
