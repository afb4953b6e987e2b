"""The Provider protocol: a short list of verbs over typed dataclasses, implemented by `local` (QEMU), `ec2` and
`container`; the optional capabilities only some providers have (regions, prices, scoped storage access, sweeping
leftovers, sharing images, ...) are in capabilities.py.

Workflows (bake, up, down, ...) speak only these protocols; boto3 and QEMU details stay inside each provider.
Callers ask `isinstance(provider, SharesImages)` (or `require(...)`), never compare provider names.
Every resource a provider creates carries the tags it is given (`vmlab:run`, `vmlab:lab`, ...).
See docs/providers.md for the whole contract.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    pass

#: states an Instance can be in, the same words for every provider
INSTANCE_STATES = ("pending", "running", "stopping", "stopped", "terminated")
#: states an Image can be in
IMAGE_STATES = ("pending", "available", "failed")


@dataclass(frozen=True)
class LaunchOptions:
    """The user's launch flags beyond image and type, checked by the CLI and the same for `bake` (the builder) and
    `up` (the lab): `--spot`, `--max-price` (USD/hour, spot only), `--volume-size` (GB) and `--ssh-cidr`
    (normalised by a `Firewalled` provider). A provider without the capability a flag needs refuses it before
    anything is made (vmlab.cli.options.check_options).

    Example::

        options = LaunchOptions(spot=True, max_price=0.3, volume_size_gb=100)
        spec = options.apply(LaunchSpec(name="lab", image="ami-1", ssh_public_key=pub))
    """

    spot: bool = False
    max_price: float | None = None
    volume_size_gb: int | None = None
    ssh_cidr: str | None = None

    def apply(self, spec: LaunchSpec) -> LaunchSpec:
        """`spec` with these options in it."""
        return replace(spec, spot=self.spot, max_price=self.max_price, volume_size_gb=self.volume_size_gb,
                       ssh_cidr=self.ssh_cidr)


@dataclass(frozen=True)
class LaunchSpec:
    """What to launch. `ssh_public_key` is an OpenSSH public key line for the default user;
    `host_key` (private key text, OpenSSH format) is installed as the VM's SSH host key when the provider
    supports it, so the caller can pin it instead of trusting on first use. It travels in the user data, which is
    not secret: the workflows replace it at the first connection (`workflows.connect.connect_launched`).

    Which provider reads which field: every provider reads name, image, ssh_public_key, instance_type, tags,
    host_key, user_data and volume_size_gb. Only EC2 reads spot, max_price, ssh_cidr and instance_profile (a
    provider without `Quotes`/`Firewalled`/`ScopesStorage` is never given them: the CLI and `up` refuse those
    flags first). Only local (QEMU) reads memory_mb and cpus (EC2 takes them from the instance type).
    """

    name: str
    image: str
    ssh_public_key: str
    instance_type: str | None = None
    user_data: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    host_key: str | None = field(default=None, repr=False)
    #: root disk in GB (None: the image's size)
    volume_size_gb: int | None = None
    # ---- EC2 only -----------------------------------------------------------------------------------------
    spot: bool = False
    #: highest spot price, USD per hour (None: the on-demand price)
    max_price: float | None = None
    #: who may reach sshd (None: this machine's public IP /32)
    ssh_cidr: str | None = None
    #: name of an IAM instance profile to attach (the lab agent's bucket access)
    instance_profile: str | None = None
    # ---- local (QEMU) only --------------------------------------------------------------------------------
    memory_mb: int | None = None
    cpus: int | None = None


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


@dataclass(frozen=True)
class LaunchPlan:
    """What a launch would make, every check passed and nothing made yet (`vmlab up/bake --dry-run` print it).
    `creates` lists the resources in the order they would be made; prices are USD/hour estimates or None."""

    provider: str
    image: str
    image_name: str
    instance_type: str
    volume_gb: int | None
    spot: bool
    creates: tuple[str, ...]
    region: str | None = None
    zone: str | None = None
    ssh_cidr: str | None = None
    vcpus: int | None = None
    memory_mib: int | None = None
    gpus: str | None = None
    on_demand_hourly: float | None = None
    spot_hourly: float | None = None
    limits: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


@runtime_checkable
class PlansLaunches(Protocol):
    """Optional capability: check a launch and an image name completely without creating anything, so every
    check runs before the first resource is made (and `--dry-run` can show the plan)."""

    def check_launch(self, spec: LaunchSpec) -> None: ...

    def plan_launch(self, spec: LaunchSpec) -> LaunchPlan: ...

    def check_image_name(self, name: str) -> None: ...


@runtime_checkable
class GuardsImages(Protocol):
    """Optional capability: images the provider holds may be someone else's (a cloud account), so a delete is
    checked first; `check_delete_image` raises BadInput for an image vmlab did not make there."""

    def check_delete_image(self, image: str) -> None: ...


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


def match_tags(tags: Mapping[str, str], wanted: Mapping[str, str] | None) -> bool:
    """Whether `tags` satisfy a filter: every wanted key present with that value ("*" = any value)."""
    return all(k in tags and (v == "*" or tags[k] == v) for k, v in (wanted or {}).items())
