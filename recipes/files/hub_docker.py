"""DockerSpawner on the hub host's loopback, for recipes/jupyterhub.py with `hub_spawner=docker`.

Installed as /etc/jupyterhub/vmlab_hub_docker.py (the hub's unit puts that folder on PYTHONPATH) and named in
jupyterhub_config.py::

    c.JupyterHub.spawner_class = "vmlab_hub_docker.LoopbackDockerSpawner"
    c.LoopbackDockerSpawner.gpus = 4        # the host's GPUs: each running server gets one of its own

Each user's container joins the host's network (no bridge, nothing published) and its `jupyterhub-singleuser`
listens on 127.0.0.1 at a port that was free when the server started (JupyterHub passes it in
JUPYTERHUB_SERVICE_URL), so the hub and the proxy reach it on loopback and nothing else does. Every request to
a server must carry its own user's token or cookie (the server checks it with the hub).

With `gpus` > 0 a starting server takes the lowest-numbered GPU no other running server of this hub holds (a
Docker device request for that one device); with all taken, the spawn fails with a message saying so. The
choice is kept in the spawner's state, so a hub restart does not hand a GPU in use to someone else.
"""

from __future__ import annotations

import socket
from typing import Any, ClassVar

from dockerspawner import DockerSpawner
from traitlets import Integer


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LoopbackDockerSpawner(DockerSpawner):
    """DockerSpawner with host networking on 127.0.0.1 and at most one GPU per running server (see the module)."""

    gpus = Integer(0, config=True, help="How many GPUs the host has (0: none); each running server gets one.")
    #: user name -> GPU index, for every server of this hub that holds one
    held: ClassVar[dict[str, int]] = {}

    def _pick_gpu(self) -> int:
        mine = self.held.get(self.user.name)
        if mine is not None:
            return mine
        taken = set(self.held.values())
        free = [index for index in range(self.gpus) if index not in taken]
        if not free:
            raise RuntimeError(f"all {self.gpus} GPUs of this hub are in use; try again when a server stops")
        self.held[self.user.name] = free[0]
        return free[0]

    async def start(self) -> Any:
        # the address and port JupyterHub hands the server in JUPYTERHUB_SERVICE_URL (DockerSpawner's own default,
        # 0.0.0.0, would open every server on the host's network)
        self.ip, self.port = "127.0.0.1", free_port()
        if self.gpus > 0:
            gpu = self._pick_gpu()
            request = {"device_ids": [str(gpu)], "capabilities": [["gpu"]]}
            self.extra_host_config = {**self.extra_host_config, "device_requests": [request]}
        try:
            return await super().start()
        except BaseException:
            self.held.pop(self.user.name, None)
            raise

    async def stop(self, now: bool = False) -> None:
        try:
            await super().stop(now=now)
        finally:
            self.held.pop(self.user.name, None)

    async def get_ip_and_port(self) -> tuple[str, int]:
        return "127.0.0.1", self.port

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        state["port"] = self.port
        if self.user.name in self.held:
            state["gpu"] = self.held[self.user.name]
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        if "port" in state:
            self.port = int(state["port"])
        if "gpu" in state:
            self.held[self.user.name] = int(state["gpu"])

    def clear_state(self) -> None:
        super().clear_state()
        self.held.pop(self.user.name, None)
