"""`LabSpawner`: a JupyterHub spawner that gives each user their own lab VM, launched from the class image through
vmlab's provider contract and `vmlab up`'s own workflow.

- start: the user's lab `CLASS-USER` is launched (or a stopped one resumed) with `vmlab up`'s workflow, tagged
  `vmlab:class`, syncing with the user's own prefix of the class bucket, with the class's idle and max-hours
  limits; on the lab, jupyterhub-singleuser (vmlab.hub.singleuser) serves ~/data on its loopback and
  authenticates against the hub. The spawner holds an SSH tunnel: the hub's proxy reaches the server through
  127.0.0.1:LOCAL (`-L`), the server reaches the hub's API through the lab's 127.0.0.1 (`-R`).
  A launch that fails or is cancelled (the hub's start timeout, a stop while starting) removes what it made
  (vmlab.workflows.cleanup); a resumed lab is stopped again.
- stop: the VM is stopped, its disk kept; deleting the user from the hub removes the lab (`delete_forever`).
- poll: the provider's state of the instance; a lab the provider reports stopped (idle stop, max hours) is
  stopped for the hub too.
- budget: `budget_usd_per_day` refuses spawns that would not fit and stops running labs once it is spent
  (vmlab.hub.budget), at the provider's prices or `hourly_usd`.
- a provider that serves labs itself (`ServesLabs`, the container provider): no SSH and no tunnel; each start
  launches a new container on the user's kept data volume with the hub's environment, published on 127.0.0.1
  (vmlab.hub.served).

See docs/hub.md for the jupyterhub_config.py an instructor writes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from jupyterhub.spawner import Spawner
from traitlets import Bool, Float, Integer, List, Unicode, Union, default
from traitlets import Callable as CallableTrait

from vmlab.errors import BadInput, VmlabError
from vmlab.hub import served
from vmlab.hub.budget import Ledger, Spend, check_can_spawn, lab_price, running_cost
from vmlab.hub.loopback import free_port, hub_api_port, listening
from vmlab.hub.names import CLASS_TAG, LabNames, check_class, check_sync_root
from vmlab.hub.singleuser import DEFAULT_COMMAND, SingleUserServer, check_command
from vmlab.providers.base import Instance, Provider
from vmlab.providers.capabilities import Quotes, ServesLabs
from vmlab.state import LabRecord, LabStore

#: serialises the budget's check-and-reserve and the ledger's read-add-write across the hub's spawners
_MONEY_LOCK = threading.Lock()
#: class -> USD/hour of its launches in progress (not yet running, so not yet in the provider's list)
_RESERVED: dict[str, float] = {}
#: the launches' threads: each mostly waits (a VM's boot, a server starting), and asyncio's default pool has only
#: CPUs + 4 threads, which made the 7th of ten students pressing start together wait for the first six
_LAUNCHES = ThreadPoolExecutor(max_workers=64, thread_name_prefix="vmlab-launch")


class SpawnCancelled(VmlabError):
    """The hub gave up on a start (its timeout, or a stop while starting): the launch undoes itself."""


class LabSpawner(Spawner):  # type: ignore[misc]  # jupyterhub ships no type hints
    """A lab VM per user. Example (jupyterhub_config.py)::

        c.JupyterHub.spawner_class = "vmlab.hub.LabSpawner"
        c.LabSpawner.class_name = "intro-ml"
        c.LabSpawner.instance_type = "g4dn.xlarge"
        c.LabSpawner.sync_root = "s3://my-bucket/intro-ml"
        c.LabSpawner.budget_usd_per_day = 40
    """

    provider_name = Unicode("ec2", config=True, help="vmlab provider of the labs (ec2, local, ...)")
    region = Unicode(None, allow_none=True, config=True, help="the provider's region (None: its default)")
    image = Unicode(None, allow_none=True, config=True, help="class image (None: the newest vmlab image)")
    instance_type = Unicode(None, allow_none=True, config=True, help="instance type of every lab")
    class_name = Unicode("", config=True, help="the class: lab names are CLASS-USER, tagged vmlab:class")
    sync_root = Unicode("", config=True, help="bucket prefix of the class (s3://bucket/class); '' for none")
    # off by default: the lab's agent cannot see notebook activity behind the hub yet (docs/hub.md); the hub's
    # idle culler stops idle servers, and so their VMs
    idle = Unicode("0", config=True, help="a lab without SSH or GPU use this long stops itself ('0': never)")
    max_hours = Float(8.0, config=True, help="a lab stops itself this many hours after its start (0: never)")
    budget_usd_per_day = Float(0.0, config=True, help="class budget in USD per UTC day (0: none)")
    hourly_usd = Float(0.0, config=True, help="USD per hour of one lab, for the budget (0: the provider's price "
                       "table; needed where the provider quotes none, e.g. containers)")
    share_storage_credentials = Bool(False, config=True, help="labs the provider serves (containers) sync with the "
                                     "hub's own storage credentials, which each student can read: allow that")
    singleuser_command = Unicode(DEFAULT_COMMAND, config=True, help="jupyterhub-singleuser on the image")
    lab_port = Union([Integer(), CallableTrait()], default_value=8888, config=True,
                     help="the server's port on the lab's loopback (or a callable of the spawner)")
    lab_hub_port = Union([Integer(), CallableTrait()], default_value=8081, config=True,
                         help="the hub API's port on the lab's loopback, the far end of the tunnel's -R")
    connect_timeout = Float(600.0, config=True, help="seconds to wait for the lab's SSH")
    # the hub machine's PATH, virtualenv and the like mean nothing on the lab
    env_keep: List[str] = List([], config=True)

    @default("start_timeout")
    def _start_timeout(self) -> int:
        return 900  # a VM boots, where a process starts

    @default("http_timeout")
    def _http_timeout(self) -> int:
        return 120

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._events: list[dict[str, Any]] = []
        self._cancel = threading.Event()
        self._cancelled = False
        self._launch: asyncio.Future[int] | None = None
        self._tunnel: Any = None
        self._local_port: int | None = None

    # -- names and the provider -------------------------------------------------------------------------------
    @property
    def names(self) -> LabNames:
        return LabNames.of(check_class(self.class_name), self.user.name)

    def _provider(self) -> Provider:
        from vmlab.providers import get_provider

        return get_provider(self.provider_name, **({"region": self.region} if self.region else {}))

    def _port(self, value: int | Any) -> int:
        return int(value(self) if callable(value) else value)

    # -- progress -------------------------------------------------------------------------------------------
    def _say(self, message: str) -> None:
        """A step of the launch, shown on the spawn page. The first step after a cancel raises SpawnCancelled, so
        the launch stops there and undoes itself (its clean-up's own messages then pass)."""
        self._tick()
        self.log.info("lab %s: %s", self.names.lab, message)
        self._events.append({"progress": min(10 + 10 * len(self._events), 90), "message": message})

    def _tick(self) -> None:
        """Raises SpawnCancelled once after the hub gave up on the start."""
        if self._cancel.is_set() and not self._cancelled:
            self._cancelled = True
            raise SpawnCancelled(f"the start of lab {self.names.lab} was cancelled")

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        sent = 0
        while True:
            while sent < len(self._events):
                yield self._events[sent]
                sent += 1
            if self._launch is None or self._launch.done():
                return
            await asyncio.sleep(0.3)

    # -- start ----------------------------------------------------------------------------------------------
    async def start(self) -> tuple[str, int]:
        names = self.names  # BadInput for a user name that cannot name a lab, before anything else
        await self._cancel_launch()  # a launch the hub gave up on finishes its clean-up first
        if self.sync_root:
            check_sync_root(self.sync_root)
        check_command(self.singleuser_command)
        self._events, self._cancel, self._cancelled = [], threading.Event(), False
        self._events.append({"progress": 5, "message": f"preparing lab {names.lab}"})
        env = self.get_env()
        loop = asyncio.get_running_loop()
        self._launch = loop.run_in_executor(_LAUNCHES, self._start_lab, names, env)
        self._launch.add_done_callback(self._launch_ended)
        try:
            port = await asyncio.shield(self._launch)
        except asyncio.CancelledError:
            # the hub gave up (its start timeout, a stop): the launch undoes itself in its thread, and the hub's
            # `stop`, which follows, waits for that; the start itself must end now (JupyterHub waits 1 s)
            self._cancel.set()
            raise
        self._local_port = port
        return "127.0.0.1", port

    async def _cancel_launch(self) -> None:
        """Tell a running launch to give up and wait while it removes what it made."""
        launch = self._launch
        if launch is None or launch.done():
            return
        self._cancel.set()
        try:
            await asyncio.shield(launch)
        except BaseException:  # noqa: BLE001 - the launch's own failure, logged by _launch_ended
            pass

    def _launch_ended(self, launch: asyncio.Future[int]) -> None:
        """Logs how a launch the hub gave up on ended (nobody awaits its result then); it may end before or after
        the hub's stop."""
        if launch.cancelled() or not self._cancel.is_set():
            return
        exc = launch.exception()
        if exc is not None:
            self.log.info("lab %s: launch ended: %s", self.names.lab, exc)

    def _start_lab(self, names: LabNames, env: dict[str, str]) -> int:
        """The launch, in a worker thread: budget, `up` with the hub's server, the tunnel. Returns the local port."""
        provider = self._provider()
        store = LabStore()
        hourly = self._hourly(provider) or 0.0
        with _MONEY_LOCK:  # two students starting at once must not both fit in the last hour of budget
            reserved = _RESERVED.get(names.class_name, 0.0)
            if self.budget_usd_per_day > 0:  # (listing the class's labs under this lock costs every start)
                spend = self._spend(provider, store)
                check_can_spawn(Spend(spend.spent, spend.hourly + reserved), hourly, self.budget_usd_per_day,
                                names.class_name)
            _RESERVED[names.class_name] = reserved + hourly
        try:
            return self._launch_lab(provider, store, names, env, hourly)
        finally:
            with _MONEY_LOCK:
                _RESERVED[names.class_name] -= hourly

    def _launch_lab(self, provider: Provider, store: LabStore, names: LabNames, env: dict[str, str],
                    hourly: float) -> int:
        from vmlab.workflows.labs import up

        if isinstance(provider, ServesLabs):
            return self._launch_served(provider, store, names, env, hourly)
        local = free_port()
        lab_port, hub_port = self._port(self.lab_port), self._port(self.lab_hub_port)
        hub_api = hub_api_port(env)
        server = SingleUserServer(env, self.singleuser_command, lab_port, hub_port, data_dir="data",
                                  before_start=lambda record: self._open_tunnel(record, local, hub_port, hub_api))
        try:
            up(provider, names.lab, image=self.image, instance_type=self.instance_type, store=store,
               connect_timeout=self.connect_timeout, idle=self.idle, max_hours=self.max_hours,
               sync=names.sync_url(self.sync_root), say=self._say, tags=names.tags, server=server,
               quote=(lambda _img: (hourly, None)) if hourly else None)
            self._say("lab started; waiting for its server")
        except BaseException:
            self._close_tunnel()
            self._stop_resumed(provider, store, names)
            raise
        return local

    def _launch_served(self, provider: ServesLabs, store: LabStore, names: LabNames, env: dict[str, str],
                       hourly: float) -> int:
        """A lab the provider serves (a container, vmlab.hub.served): relaunched on its kept data at each start;
        returns the port it is published on."""
        from vmlab.workflows.labs import up

        base: Provider = provider  # type: ignore[assignment]  # a ServesLabs provider is a Provider
        if self.sync_root and not self.share_storage_credentials:
            raise BadInput(f"the {base.name} provider gives every lab the hub's own storage credentials, which each "
                           "student could read (and so every student's data)",
                           "use VM labs (ec2: an instance profile per student's prefix), or set "
                           "c.LabSpawner.share_storage_credentials = True for a class that may share the bucket")
        server = served.HubServer(env, tick=self._tick)
        sync = names.sync_url(self.sync_root)
        served.check_relaunch(provider, names.lab, names.tags, self.image, self.idle, self.max_hours, sync)
        served.discard_previous(provider, store, names.lab, stop=lambda record: self._stop_running(base, record))
        result = up(base, names.lab, image=self.image, instance_type=self.instance_type, store=store,
                    lab_timeout=float(self.start_timeout), idle=self.idle, max_hours=self.max_hours,
                    sync=sync, say=self._say, tags=names.tags, server=server,
                    quote=(lambda _img: (hourly, None)) if hourly else None)
        self._say("lab started; its server answers")
        return served.target(result.record)

    def _stop_running(self, provider: Provider, record: LabRecord) -> None:
        inst = provider.describe(record.instance_id)
        if inst is not None and inst.state == "running":
            self._stop_instance(provider, record, inst)

    def _open_tunnel(self, record: LabRecord, local: int, hub_port: int, hub_api: int) -> None:
        from vmlab.workflows.tunnel import OpenSSH, check_key_file, connect_failure

        self._say("opening the SSH tunnel to the lab")
        check_key_file(record)
        self._close_tunnel()
        tunnel = OpenSSH(record, [(local, record.jupyter_port)], reverse=((hub_port, hub_api),))
        tunnel.start()
        self._tunnel = tunnel
        for _ in range(100):  # until ssh listens locally (or gives up)
            if not tunnel.alive():
                raise connect_failure(record, tunnel.failure())
            if listening(local):
                return
            threading.Event().wait(0.05)

    def _close_tunnel(self) -> None:
        tunnel, self._tunnel = self._tunnel, None
        if tunnel is not None:
            tunnel.stop()

    def _stop_resumed(self, provider: Provider, store: LabStore, names: LabNames) -> None:
        """A failed start of a recorded lab leaves it stopped (a new one was removed by `up` itself)."""
        record = store.get(names.lab)
        if record is None:
            return
        inst = provider.describe(record.instance_id)
        if inst is not None and inst.state == "running":
            self._stop_instance(provider, record, inst)

    # -- stop, poll, delete ---------------------------------------------------------------------------------
    async def stop(self, now: bool = False) -> None:
        await self._cancel_launch()
        self._close_tunnel()
        await asyncio.get_running_loop().run_in_executor(None, self._stop_lab)

    def _stop_lab(self) -> None:
        store = LabStore()
        record = store.get(self.names.lab)
        if record is None:
            return
        provider = self._provider()
        inst = provider.describe(record.instance_id)
        if inst is not None and inst.state == "running":
            self._stop_instance(provider, record, inst)

    def _stop_instance(self, provider: Provider, record: LabRecord, inst: Instance) -> None:
        """Stop the VM (disk kept) and put the session's cost in the class's ledger."""
        now = dt.datetime.now(dt.timezone.utc)
        started = _started(inst)
        provider.stop(inst.id)
        if record.hourly_price and started is not None:
            with _MONEY_LOCK:
                Ledger(self.names.class_name).add(running_cost(record.hourly_price, started, now), now)

    async def poll(self) -> int | None:
        if self._launch is not None and not self._launch.done():
            return None
        return await asyncio.get_running_loop().run_in_executor(None, self._poll_lab)

    def _poll_lab(self) -> int | None:
        store = LabStore()
        record = store.get(self.names.lab)
        if record is None:
            return 0
        provider = self._provider()
        inst = provider.describe(record.instance_id)
        if inst is None or inst.state != "running":
            self._close_tunnel()
            return 0
        if self.budget_usd_per_day > 0 and self._spend(provider, store).reached(self.budget_usd_per_day):
            self.log.warning("class %s spent its budget: stopping lab %s", self.names.class_name, record.name)
            self._close_tunnel()
            self._stop_instance(provider, record, inst)
            return 0
        if isinstance(provider, ServesLabs):
            return None  # published by the provider: no tunnel to hold
        if self._tunnel is None or not self._tunnel.alive():
            if self._local_port is None:
                return 0  # a hub restarted without the tunnel's port: the user starts the server again
            self._open_tunnel(record, self._local_port, self._port(self.lab_hub_port),
                              hub_api_port(self.get_env()))
        return None

    async def delete_forever(self) -> None:
        """The user is deleted from the hub: their lab goes (instance and disk; the bucket prefix stays). A running
        lab first pushes what its agent has not synced (`vmlab down` refuses while anything is left); a stopped
        VM flushed at its shutdown and is removed as it is. A lab the provider serves (a container), running,
        stopped or with its data volumes only, goes once its agent's push proves nothing is unsynced; otherwise
        it stays (container, volumes and record: `vmlab ls` shows it) and the reason is logged as an error."""
        await self._cancel_launch()
        self._close_tunnel()
        await asyncio.get_running_loop().run_in_executor(None, self._remove_lab)

    def _remove_lab(self) -> None:
        from vmlab.workflows.labpower import down, find_lab_instance

        provider, store = self._provider(), LabStore()
        inst = find_lab_instance(provider, self.names.lab)
        serves = isinstance(provider, ServesLabs)
        listed = store.get(self.names.lab) is not None or inst is not None
        try:
            if listed:
                down(provider, self.names.lab, store=store,
                     force=not serves and (inst is None or inst.state != "running"), say=self._log)
            served.remove_data(provider, self.names.lab, self.names.sync_url(self.sync_root), self.image)
        except VmlabError as e:
            if not serves:
                raise
            how = ("`vmlab ls`, then `vmlab start` or `vmlab down` it" if listed else
                   "only its volumes are left, which `vmlab ls` does not list: add the user again and start their "
                   "server (it syncs), or delete them again once the bucket is back")
            self.log.error("lab %s: kept, with its data (the user is deleted; %s): %s", self.names.lab, how, e)

    def _log(self, message: str) -> None:
        self.log.info("lab %s: %s", self.names.lab, message)

    # -- state kept by the hub ------------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = super().get_state()
        if self._local_port is not None:
            state["vmlab_local_port"] = self._local_port
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        port = state.get("vmlab_local_port")
        self._local_port = int(port) if isinstance(port, int) else None

    def clear_state(self) -> None:
        super().clear_state()
        self._local_port = None

    # -- money ----------------------------------------------------------------------------------------------
    def _hourly(self, provider: Provider) -> float | None:
        return lab_price(provider, self.instance_type, self.hourly_usd, self.budget_usd_per_day)

    def _spend(self, provider: Provider, store: LabStore) -> Spend:
        now = dt.datetime.now(dt.timezone.utc)
        running = []
        for inst in provider.list_instances({CLASS_TAG: self.names.class_name}):
            started = _started(inst)
            if inst.state != "running" or started is None:
                continue
            record = store.get(inst.tags.get("vmlab:lab", ""))
            hourly = record.hourly_price if record is not None else None
            hourly = hourly or self.hourly_usd or None
            if hourly is None and isinstance(provider, Quotes) and inst.instance_type:
                hourly = provider.list_price(inst.instance_type)
            running.append((hourly or 0.0, started))
        return Spend.of(running, Ledger(self.names.class_name).spent(now), now)


def _started(inst: Instance) -> dt.datetime | None:
    from vmlab.workflows.listing import uptime_seconds

    now = dt.datetime.now(dt.timezone.utc)
    up = uptime_seconds(inst, now)
    return None if up is None else now - dt.timedelta(seconds=up)
