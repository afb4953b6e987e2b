"""The optional capabilities only some providers have, beside the Provider protocol (base.py): regions, prices
and type choice, firewall and customer keys, scoped storage access, sweeping leftovers, sharing images, building
base images, running commands without SSH, serving labs on this machine, shipping images.

Example::

    if isinstance(provider, ServesLabs):   # a lab the provider runs on this machine (containers)
        provider.launch_lab(spec, lab)
    sharing = require(provider, SharesImages, "share images")  # else BadInput "the local provider cannot ..."
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from vmlab.providers.base import Image, Instance, LaunchSpec, Progress, Provider

if TYPE_CHECKING:
    from vmlab.agent.status import AgentStatus
    from vmlab.engine.host import Session

# Each is a few methods (no attributes, so `isinstance` never runs a property) that a provider has or lacks.
# cli/ and workflows/ check them with `isinstance` or `vmlab.providers.require`, which says "the local provider
# cannot share images" from the provider's own name and the missing capability.


@runtime_checkable
class Regional(Protocol):
    """The provider works in one region of several (EC2). Its constructor takes `region=` (None: the user's
    default); `current_region()` checks that region (BadInput when unknown), `in_region` opens the same provider
    with the same settings elsewhere."""

    def current_region(self) -> str: ...

    def known_regions(self) -> set[str]: ...

    def in_region(self, region: str) -> Provider: ...


class Offer(Protocol):
    """What an instance type gives and roughly costs (USD per hour, estimates)."""

    on_demand: float | None
    #: zone -> latest spot price (empty unless spot prices were asked for)
    spot: Mapping[str, float]

    @property
    def spot_low(self) -> float | None: ...

    def hourly(self, spot: bool) -> float | None: ...

    def describe(self) -> str: ...

    def to_json(self) -> dict[str, Any]: ...


@runtime_checkable
class Quotes(Protocol):
    """Prices and offers: what a type gives and costs, spot capacity (`--spot`, `--max-price`) included.
    `offer` checks the type against the image (BadInput when it cannot run it)."""

    def offer(self, instance_type: str | None, image: str | None = None, spot: bool = False) -> Offer: ...

    def list_price(self, instance_type: str) -> float | None: ...


@dataclass(frozen=True)
class TypeChoice:
    """The instance type a provider chose for a generic `--type` (vmlab.typespec), and why, in one line."""

    instance_type: str
    hourly: float | None
    why: str

    def to_json(self) -> dict[str, Any]:
        return {"type": self.instance_type, "hourly": self.hourly, "why": self.why}


@runtime_checkable
class ChoosesTypes(Protocol):
    """Resolves a generic type (`m+t4`, `cpu=8,mem=32`: a vmlab.typespec.TypeRequest) to the cheapest type it
    offers here that fits, spot prices when `spot`; BadInput (one line) when none fits. Nothing is created."""

    def choose_type(self, request: Any, spot: bool = False) -> TypeChoice: ...


@runtime_checkable
class Firewalled(Protocol):
    """SSH to the VMs is allowed from a network range (`--ssh-cidr`), checked and normalised here."""

    def check_ssh_cidr(self, text: str) -> str: ...


@runtime_checkable
class CustomerKeys(Protocol):
    """Disks and images encrypted with a customer-managed key: the constructor takes `kms_key=`."""

    def verify_kms_key(self) -> None: ...


@dataclass(frozen=True)
class StorageGrant:
    """Access to a storage prefix the provider attaches to a VM at launch (LaunchSpec.instance_profile).
    `created`: made now (so a failed launch removes it); `describe` says what it allows, for humans; `settle`
    (when set) waits until a new grant is usable: called by the caller after it registered the grant's removal."""

    name: str
    created: bool
    describe: str
    settle: Callable[[], None] | None = None


@runtime_checkable
class ScopesStorage(Protocol):
    """A lab's agent may sync with a bucket (`up --sync`). `grant_storage` returns the access the provider attaches
    at launch (found or made) or None when the VM uses the URL's own credentials; `storage_scope` is what that
    access is fixed to (None: nothing fixed at launch, the URL may change on a later `up`)."""

    def storage_scope(self, url: str) -> str | None: ...

    def grant_storage(self, url: str) -> StorageGrant | None: ...

    def revoke_storage(self, grant: StorageGrant) -> None: ...


@dataclass(frozen=True)
class Leftover:
    """One resource `gc` found. `removable` is False for labs unless asked (and always for recorded labs)."""

    kind: str  # instance, lab, security-group, key-pair, volume, snapshot, image
    id: str
    name: str
    reason: str
    removable: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "id": self.id, "name": self.name, "reason": self.reason,
                "removable": self.removable}


@runtime_checkable
class SweepsLeftovers(Protocol):
    """Finds what vmlab left behind (tagged, but no live run owns it) and removes it. Recorded labs are never
    removable; other labs only with `labs`. `remove_leftovers` returns (removed, [(item, why it failed)])."""

    def find_leftovers(self, recorded: Iterable[str] = (), labs: bool = False) -> list[Leftover]: ...

    def remove_leftovers(self, items: Iterable[Leftover]) -> tuple[list[Leftover], list[tuple[Leftover, str]]]: ...


@dataclass(frozen=True)
class ShareRequest:
    """Who may launch an image and where copies go, as the user gave them; `SharesImages.check_share` returns
    it checked and normalised (or raises BadInput). `keys`: region -> encryption key of that region's copy."""

    image: str
    accounts: tuple[str, ...] = ()
    orgs: tuple[str, ...] = ()
    ous: tuple[str, ...] = ()
    public: bool = False
    regions: tuple[str, ...] = ()
    keys: Mapping[str, str] = field(default_factory=dict)
    remove: bool = False

    def grantees(self) -> dict[str, Any]:
        return {"accounts": list(self.accounts), "orgs": list(self.orgs), "ous": list(self.ous),
                "public": self.public}

    def who(self) -> str:
        return ", ".join([*self.accounts, *self.orgs, *self.ous] + (["everyone (public)"] if self.public else []))


@runtime_checkable
class SharesImages(Protocol):
    """Lets other accounts (organizations, everyone) launch an image, and copies images to other regions.
    `check_share` checks a request without calling the cloud; the rest act on images this account owns."""

    def check_share(self, request: ShareRequest, regions_text: str | None,
                    key_values: tuple[str, ...]) -> ShareRequest: ...

    def describe_owned(self, image: str) -> Image: ...

    def share_with(self, image: str, request: ShareRequest) -> Image: ...

    def launch_permissions(self, image: str) -> list[dict[str, str]]: ...

    def unshareable_snapshots(self, image: str) -> list[str]: ...

    def check_copy_key(self, region: str, key: str) -> None: ...

    def find_copy(self, source_region: str, source_id: str) -> str | None: ...

    def copy_image_to(self, image: str, region: str, kms_key: str | None = None,
                      progress: Progress | None = None) -> tuple[Image, bool]: ...


@runtime_checkable
class BuildsBaseImage(Protocol):
    """The provider builds its own base image once, on this machine (`vmlab local init`)."""

    def build_base_image(self, progress: Progress | None = None) -> Image: ...


@runtime_checkable
class Executes(Protocol):
    """Commands reach an instance through the provider itself, not SSH (a container: `podman exec`).
    `exec_host` returns the engine's Host for a running instance, with a `close()` (vmlab.engine.host.Session);
    the workflows use it instead of an SSH connection, and the launch's SSH key and host key go unused."""

    def exec_host(self, instance_id: str) -> Session: ...


@dataclass(frozen=True)
class LabLaunch:
    """What a lab the provider serves itself is started with: JupyterLab's `token` (fresh at each launch; secret)
    and the agent's settings (sync URL, idle minutes and hard limit per start; 0 = off)."""

    token: str = field(repr=False)
    sync_url: str | None = field(default=None, repr=False)
    idle_minutes: float = 0.0
    #: hours each start of the lab may run before the agent stops it (0: no limit)
    max_hours: float = 0.0
    #: a JupyterHub's environment for the server (JUPYTERHUB_API_TOKEN, ...; secret): the agent then runs
    #: `jupyterhub-singleuser`, which checks every visitor with the hub, instead of JupyterLab with `token`
    hub_env: Mapping[str, str] = field(default_factory=dict, repr=False)


@runtime_checkable
class ServesLabs(Protocol):
    """Optional capability: the provider runs the lab's JupyterLab itself and publishes it on this machine's
    127.0.0.1 (a container running `vmlab-agent run --jupyter`), so `up` passes the token at launch, `tunnel`
    only prints the URL and nothing goes over SSH. The Instance of such a lab has host 127.0.0.1 and `port` the
    published one. `read_file` reads a file of the lab, running or stopped (the agent's status); `shell`
    returns the argv and environment of an interactive shell in it (`vmlab ssh`). A lab's data (the folder the
    agent syncs) outlives its instance: `lab_data_tags(name)` gives the tags lab `name`'s data was made with (None
    when it has none), `discard_lab`
    removes an instance and keeps its data (a hub relaunches a user's lab with a new environment at each start),
    `undo_lab_launch` removes an instance and the data its launch made (a failed launch keeps only what was there
    before), `remove_lab_data` removes the data of a lab that has no instance (`terminate` removes both). The
    agent's own state (what is not in the bucket yet) is kept with the data: `flush_lab_data` runs the agent's
    push on the data of a lab that is not running (from its instance's image, else `image`) and returns the
    status it ends with; HostError when that proves nothing (LabNotStopped: the instance is stopping or paused).
    `lab_lock(name)` is held across a launch of lab `name` and across `down`'s check and removal, so they never
    interleave."""

    def check_lab_image(self, image: str) -> None: ...

    def launch_lab(self, spec: LaunchSpec, lab: LabLaunch) -> Instance: ...

    def read_file(self, instance_id: str, path: str) -> bytes | None: ...

    def shell(self, instance_id: str, command: tuple[str, ...]) -> tuple[list[str], dict[str, str]]: ...

    def lab_data_tags(self, name: str) -> dict[str, str] | None: ...

    def discard_lab(self, instance_id: str) -> None: ...

    def undo_lab_launch(self, instance_id: str) -> None: ...

    def remove_lab_data(self, name: str) -> None: ...

    def flush_lab_data(self, name: str, sync_url: str, image: str) -> AgentStatus: ...

    def lab_lock(self, name: str) -> AbstractContextManager[None]: ...


@runtime_checkable
class ShipsImages(Protocol):
    """Images leave the provider as files or go to a registry: `export_image` writes an OCI layout folder
    (`kind="oci"`) or a docker-archive tar; `push_image` pushes to `HOST[:PORT]/REPO[:TAG]` and returns the
    digest the registry stored. TLS is checked except for a registry on this machine's loopback."""

    def export_image(self, image: str, kind: str, dest: Path) -> Path: ...

    def push_image(self, image: str, dest: str) -> str: ...
