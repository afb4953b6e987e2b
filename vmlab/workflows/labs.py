"""`vmlab up`: labs launched from a vmlab image (or resumed), found again by their tags; their life after that
(stop, start, down, the agent's status) is vmlab.workflows.labpower.

`up` launches (or resumes) a lab, sends a fresh Jupyter token over SSH into a root-only file, starts JupyterLab on
the VM's loopback and waits until it answers with that token; the lab is recorded locally so `tunnel` can reach it.
`up` and `down` also rewrite vmlab's SSH config when it exists (`vmlab ssh-config`), so it never goes stale.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from vmlab import keys
from vmlab.errors import BadInput, HostError
from vmlab.interrupts import deferred_signals
from vmlab.providers.base import Image, Instance, LaunchOptions, LaunchSpec, Provider
from vmlab.providers.capabilities import Regional, ScopesStorage, ServesLabs
from vmlab.safetext import check_record
from vmlab.state import AgentSection, LabRecord, LabStore, check_name
from vmlab.syncurl import redact
from vmlab.workflows import labagent, sshconfig
from vmlab.workflows.cleanup import Cleanup
from vmlab.workflows.connect import connect_instance, rotate_host_key
from vmlab.workflows.labagent import AgentSettings
from vmlab.workflows.labpower import SYNC_TAG, find_lab_instance, terminate
from vmlab.workflows.labserver import JupyterLabServer, LabServer, Stopwatch
from vmlab.workflows.preflight import check_launch, where_flags
from vmlab.workflows.servedlab import ServedServer

Say = Callable[[str], None]
#: called with the resolved image just before a launch: checks the instance type against it, shows what the type
#: gives and costs, and returns the (on-demand, spot) hourly price estimates, None when unknown
Quote = Callable[[Image], tuple[float | None, float | None]]

@dataclass
class UpResult:
    record: LabRecord
    resumed: bool
    tunnel_hint: str
    #: seconds: launch (or start), boot_to_ssh, host_key (a new lab's own host key replacing the launch key),
    #: token (write + restart), restore (agent settings and ~/data from
    #: the bucket), jupyter_start, total and overhead = total - boot_to_ssh - restore - jupyter_start (what vmlab
    #: itself adds to the guest's own boot, download and start-up)
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"lab": self.record.to_json(), "resumed": self.resumed, "tunnel": self.tunnel_hint,
                "timings": {k: round(v, 2) for k, v in self.timings.items()}}


def default_image(provider: Provider) -> Image:
    """The newest available image vmlab baked with this provider."""
    images = [i for i in provider.list_images({"vmlab:recipe-hash": "*"}) if i.state == "available"]
    if not images:
        raise BadInput(f"no vmlab image found for provider {provider.name}",
                       f"bake one first: vmlab bake recipes/lab.py --provider {provider.name}")
    return max(images, key=lambda i: i.created or "")


def resolve_image(provider: Provider, image: str | None) -> Image:
    if image is None:
        return default_image(provider)
    found = provider.describe_image(image)
    if found is None:
        raise BadInput(f"image {image!r} not found for provider {provider.name}",
                       "list images with `vmlab images`")
    if found.state != "available":
        raise BadInput(f"image {image!r} is {found.state}, not available", "wait for it, or bake again")
    return found


@dataclass
class UpChecks:
    """`up`'s first phase: everything checked, nothing made. `existing` is the recorded lab to resume; else
    `spec` is the launch (without its instance profile, made later) and `image` what it launches from."""

    name: str
    store: LabStore
    settings: AgentSettings
    record: LabRecord | None = None
    existing: Instance | None = None
    image: Image | None = None
    prices: tuple[float | None, float | None] = (None, None)
    spec: LaunchSpec | None = None
    client: keys.KeyPair | None = None
    host_key: keys.KeyPair | None = None


def check_up(provider: Provider, name: str, *, image: str | None = None, instance_type: str | None = None,
             store: LabStore | None = None, idle: str | None = None,
             max_hours: float | None = None, sync: str | None = None,
             options: LaunchOptions | None = None, quote: Quote | None = None,
             tags: Mapping[str, str] | None = None) -> UpChecks:
    """Every check of `up` (name, flags, the lab's instance, image, type, launch) before anything is made.
    `tags` are added to a new lab's (a hub's class and user: `vmlab:class`), never replacing vmlab's own."""
    check_name(name)
    store = store or LabStore()
    record = store.get(name)
    previous = record.agent if record is not None else None
    settings = AgentSettings.from_flags(idle, max_hours, sync, previous)
    check_can_sync(provider, sync)
    existing = find_lab_instance(provider, name)
    if existing is not None and record is not None and record.instance_id == existing.id:
        check_record(record)  # before the lab is started: a bad record must not cost a start
        _check_same_profile(provider, name, previous, settings)
        return UpChecks(name, store, settings, record, existing)
    if existing is not None:
        raise HostError(f"lab {name} exists ({existing.id}) but this machine has no record of it",
                        f"remove it with `vmlab down {name}{where_flags(provider)}` (it finds the lab by its tags), "
                        "or choose another name")
    img = resolve_image(provider, image)
    prices = quote(img) if quote else (None, None)
    client, host_key = keys.generate(f"vmlab-lab-{name}"), keys.generate("host")
    tags = {**(tags or {}), "vmlab:lab": name, "vmlab:run": "up-" + secrets.token_hex(4)}
    if settings.sync_url:
        tags[SYNC_TAG] = "yes"  # so a `down` without the record knows the lab's data may not be in its bucket
    spec = (options or LaunchOptions()).apply(LaunchSpec(name, img.id, client.public, instance_type=instance_type,
                                                         host_key=host_key.private, tags=tags))
    check_launch(provider, spec)
    if isinstance(provider, ServesLabs):
        provider.check_lab_image(img.id)
    return UpChecks(name, store, settings, record, None, img, prices, spec, client, host_key)


def up(provider: Provider, name: str, *, image: str | None = None, instance_type: str | None = None,
       store: LabStore | None = None, connect_timeout: float = 900.0,
       lab_timeout: float = 180.0, idle: str | None = None, max_hours: float | None = None,
       sync: str | None = None, say: Say = lambda _m: None,
       options: LaunchOptions | None = None, quote: Quote | None = None,
       tags: Mapping[str, str] | None = None, server: LabServer | ServedServer | None = None) -> UpResult:
    """Launch lab `name` (or resume it if it exists) and wait until JupyterLab answers with a fresh token.
    `idle` ("30m"), `max_hours` and `sync` (s3://bucket/prefix) go to the lab's agent (vmlab.workflows.labagent);
    a flag left None keeps the lab's previous setting. `options` are the launch flags (spot, max_price,
    volume_size_gb, ssh_cidr); `quote` runs before a new launch and its price is recorded with the lab. Every
    check (`check_up`) runs before the first thing is made. `server` is what runs on the lab's loopback (default:
    the recipe's JupyterLab with a fresh token; vmlab.hub gives jupyterhub-singleuser: a LabServer over SSH, a
    ServedServer for a provider that serves labs itself); `tags` go on a new lab."""
    watch = Stopwatch()
    served_server = _served_server(provider, server)
    checks = check_up(provider, name, image=image, instance_type=instance_type, store=store, idle=idle,
                      max_hours=max_hours, sync=sync, options=options, quote=quote, tags=tags)
    store, settings, existing, record = checks.store, checks.settings, checks.existing, checks.record
    if isinstance(provider, ServesLabs):  # the provider runs JupyterLab itself: no SSH
        from vmlab.workflows.servedlab import up_served

        served = up_served(provider, checks, watch, lab_timeout, say, served_server)
        return UpResult(served, existing is not None, tunnel_hint(name), watch.finish())
    assert not isinstance(server, ServedServer)  # _served_server refused it
    server = server or JupyterLabServer(lab_timeout)
    if existing is not None and record is not None:
        if existing.state in ("stopped", "stopping"):
            say(f"starting lab {name} ({existing.id})")
            with watch.lap("launch"):
                existing = provider.start(existing.id)
        record.host, record.port, record.jupyter_port = existing.host, existing.port, server.port
        record.agent = settings.section()
        check_record(record)  # again: the address is new
        _start_server(provider, existing, record, connect_timeout, server, say, watch, settings)
        store.put(record)
        sshconfig.refresh(store)
        return UpResult(record, True, tunnel_hint(name), watch.finish())
    assert checks.spec and checks.image and checks.client and checks.host_key  # set for a new launch
    img, client, prices, host_public = checks.image, checks.client, checks.prices, checks.host_key.public
    with Cleanup(say) as cleanup:
        key_file = client.save(store.key_path(name))
        cleanup.on_failure(f"key of lab {name}", lambda: keys.remove(key_file))
        profile = _sync_profile(provider, settings, cleanup, say)
        say(f"launching lab {name} from {img.name} ({img.id})")
        with watch.lap("launch"), deferred_signals():  # a signal right after the launch waits for the undo
            inst = provider.launch(replace(checks.spec, instance_profile=profile))
            cleanup.on_failure(f"instance {inst.id}", lambda: terminate(provider, inst.id))
        record = LabRecord(name=name, provider=provider.name, instance_id=inst.id, image=img.id, user=inst.user,
                           key_file=str(key_file), host_key=host_public, token="", host=inst.host,
                           port=inst.port, jupyter_port=server.port,
                           created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                           instance_type=inst.instance_type, spot=inst.spot,
                           region=provider.current_region() if isinstance(provider, Regional) else None,
                           hourly_price=prices[1 if inst.spot else 0])
        record.agent = settings.section()
        check_record(record)  # the user comes from the instance's tags: data, checked before it is written anywhere
        _start_server(provider, inst, record, connect_timeout, server, say, watch, settings, new_host_key=True)
        store.put(record)
    sshconfig.refresh(store)
    return UpResult(record, False, tunnel_hint(name), watch.finish())


def _served_server(provider: Provider, server: LabServer | ServedServer | None) -> ServedServer | None:
    """The server a provider that serves labs runs (None: its JupyterLab with a token); BadInput when `server`
    does not fit how the provider runs labs."""
    served = isinstance(provider, ServesLabs)
    if server is not None and served != isinstance(server, ServedServer):
        raise BadInput(f"the {provider.name} provider " + ("serves labs itself (no SSH): it needs a ServedServer"
                                                           if served else "reaches labs over SSH: it needs a "
                                                           "LabServer"), "use the server that fits the provider")
    return server if isinstance(server, ServedServer) else None


def _sync_profile(provider: Provider, settings: AgentSettings, cleanup: Cleanup, say: Say) -> str | None:
    """The storage access the provider attaches at launch for the sync URL (EC2: an instance profile that allows
    that prefix only, found or created; one created now is removed if the launch fails). None when the VM uses
    the URL's own credentials."""
    if not settings.sync_url or not isinstance(provider, ScopesStorage):
        return None
    grant = provider.grant_storage(settings.sync_url)
    if grant is None:
        return None
    if grant.created:
        cleanup.on_failure(grant.describe, lambda: provider.revoke_storage(grant))
        say(f"created {grant.describe}")
    if grant.settle is not None:
        grant.settle()  # after the removal is registered: a Ctrl-C in this wait must not leak the grant
    return grant.name


def check_can_sync(provider: Provider, sync: str | None) -> None:
    """BadInput before anything is made when `up --sync` names a bucket and the provider cannot give a lab
    access to storage."""
    if sync and sync.strip():
        from vmlab.providers import require

        require(provider, ScopesStorage, "give a lab access to a bucket (--sync)")


def _check_same_profile(provider: Provider, name: str, previous: AgentSection | None,
                        settings: AgentSettings) -> None:
    """A lab's bucket access may be fixed at launch (an EC2 instance profile): then --sync cannot move it."""
    if not isinstance(provider, ScopesStorage) or not settings.sync_url:
        return
    before = previous.sync_url if previous else None
    after = provider.storage_scope(settings.sync_url)
    if after is not None and after != (provider.storage_scope(before) if before else None):
        raise BadInput(f"lab {name} was launched to sync with {redact(before) if before else 'nothing'}; its "
                       f"{provider.name} permissions cannot follow --sync {redact(settings.sync_url)}",
                       f"`vmlab down {name}` and launch it again")


def _start_server(provider: Provider, inst: Instance, record: LabRecord, connect_timeout: float,
                  server: LabServer, say: Say, watch: Stopwatch, settings: AgentSettings,
                  new_host_key: bool = False) -> None:
    """Send the agent settings and (re)start the lab's server (`server`: its token, unit and check). `new_host_key`:
    the lab was just launched, so its launch host key (sent in the user data) is replaced first and the record pins
    the new one."""
    from pathlib import Path

    say(f"waiting for SSH on {inst.host}:{inst.port}")
    with watch.lap("boot_to_ssh"):
        conn = connect_instance(provider, inst, Path(record.key_file), record.host_key, timeout=connect_timeout)
    if new_host_key:
        # before the token goes anywhere; the `with` closes the first connection, `conn` becomes the new one
        with watch.lap("host_key"), conn:
            conn, record.host_key = rotate_host_key(conn)
    with conn:
        server.prepare(conn, record, watch)
        with watch.lap("restore"):  # agent settings, then ~/data from the bucket before the server starts
            labagent.write_agent_env(conn, settings, record.user, time.time())
        server.start(conn, record, watch, say)
        missing = labagent.restart_agent(conn)
        say(settings.describe())
        if warning := labagent.missing_agent_warning(settings, missing):
            say(warning)


def tunnel_hint(name: str) -> str:
    return f"vmlab tunnel {name}"


