"""The Provider protocol: a short list of verbs over typed dataclasses, implemented by `local` (QEMU) and `ec2`.

Workflows (bake, up, down, ...) speak only this protocol; boto3 and QEMU details stay inside each provider.
Every resource a provider creates carries the tags it is given (`vmlab:run`, `vmlab:lab`, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

#: states an Instance can be in, the same words for every provider
INSTANCE_STATES = ("pending", "running", "stopping", "stopped", "terminated")
#: states an Image can be in
IMAGE_STATES = ("pending", "available", "failed")


@dataclass(frozen=True)
class LaunchSpec:
    """What to launch. `ssh_public_key` is an OpenSSH public key line for the default user;
    `host_key` (private key text, OpenSSH format) is installed as the VM's SSH host key when the provider
    supports it, so the caller can pin it instead of trusting on first use. It travels in the user data, which is
    not secret: the workflows replace it at the first connection (`workflows.connect.connect_launched`)."""

    name: str
    image: str
    ssh_public_key: str
    instance_type: str | None = None
    user_data: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    spot: bool = False
    max_price: float | None = None
    volume_size_gb: int | None = None
    ssh_cidr: str | None = None
    host_key: str | None = field(default=None, repr=False)
    memory_mb: int | None = None
    cpus: int | None = None
    #: EC2: name of an IAM instance profile to attach (the lab agent's bucket access); ignored elsewhere
    instance_profile: str | None = None


@dataclass(frozen=True)
class Instance:
    """A VM as a provider sees it. `host`/`port` are where its sshd answers (for local VMs 127.0.0.1 and a
    forwarded port)."""

    id: str
    name: str
    state: str
    host: str | None
    port: int
    user: str
    image: str
    provider: str
    instance_type: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    launched_at: str | None = None
    spot: bool = False


@dataclass(frozen=True)
class Image:
    """A bootable image made by `create_image` (or a base image). `shared_with` lists account ids."""

    id: str
    name: str
    state: str
    provider: str
    created: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    size_bytes: int | None = None
    shared_with: tuple[str, ...] = ()
    source: str | None = None
    user: str = "admin"
    architecture: str = "x86_64"


Progress = Callable[[str, float | None], None]
"""A progress callback: (message, fraction done or None when unknown)."""


class Provider(Protocol):
    """The verbs every provider implements.

    Example::

        provider = get_provider("local")
        inst = provider.launch(LaunchSpec(name="lab", image=img.id, ssh_public_key=pub, tags={"vmlab:lab": "lab"}))
        ...
        provider.terminate(inst.id)
    """

    name: str
    #: the base image `bake` starts from when the user names none
    default_base: str

    def launch(self, spec: LaunchSpec) -> Instance: ...

    def describe(self, instance_id: str) -> Instance | None: ...

    def list_instances(self, tags: Mapping[str, str] | None = None) -> list[Instance]: ...

    def stop(self, instance_id: str) -> Instance: ...

    def start(self, instance_id: str) -> Instance: ...

    def terminate(self, instance_id: str) -> None: ...

    def create_image(self, instance_id: str, name: str, tags: Mapping[str, str],
                     progress: Progress | None = None) -> Image: ...

    def describe_image(self, image: str) -> Image | None: ...

    def list_images(self, tags: Mapping[str, str] | None = None) -> list[Image]: ...

    def delete_image(self, image_id: str) -> None: ...

    def share_image(self, image_id: str, accounts: tuple[str, ...], remove: bool = False) -> Image: ...


def match_tags(tags: Mapping[str, str], wanted: Mapping[str, str] | None) -> bool:
    """Whether `tags` satisfy a filter: every wanted key present with that value ("*" = any value)."""
    return all(k in tags and (v == "*" or tags[k] == v) for k, v in (wanted or {}).items())
