"""recipes/files/hub_docker.py (the docker mode's spawner class) without a Docker engine: a GPU each, none handed
out twice, released when a server stops or fails to start, and kept in the spawner's state across a hub restart;
each start on 127.0.0.1 at a free port. (The whole path with a real hub and engine: tests/container/
test_hub_dockerspawner.py.)"""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from dockerspawner import DockerSpawner

MODULE = Path(__file__).resolve().parents[2] / "recipes" / "files" / "hub_docker.py"
spec = importlib.util.spec_from_file_location("vmlab_hub_docker", MODULE)
assert spec and spec.loader
hub_docker = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hub_docker)
Spawner = hub_docker.LoopbackDockerSpawner


@pytest.fixture(autouse=True)
def fresh_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Spawner, "held", {})


def spawner(name: str, gpus: int = 2) -> Any:
    return Spawner(user=SimpleNamespace(name=name, id=1, url=f"/user/{name}/", escaped_name=name), gpus=gpus)


def test_each_running_server_gets_its_own_gpu_until_none_is_left() -> None:
    ana, ben, chloe = spawner("ana"), spawner("ben"), spawner("chloe")
    assert (ana._pick_gpu(), ben._pick_gpu(), ana._pick_gpu()) == (0, 1, 0)
    with pytest.raises(RuntimeError, match="all 2 GPUs of this hub are in use"):
        chloe._pick_gpu()
    ben.clear_state()
    assert chloe._pick_gpu() == 1


def test_a_hub_restart_keeps_who_holds_which_gpu() -> None:
    ana = spawner("ana")
    ana.load_state({"gpu": 1, "port": 45678})
    assert ana.port == 45678 and ana.get_state()["gpu"] == 1
    assert spawner("ben")._pick_gpu() == 0


def test_start_asks_for_that_device_on_loopback_and_a_failed_start_releases_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []

    async def parent_start(self: Any) -> tuple[str, int]:
        seen.append({"ip": self.ip, "port": self.port, "host": self.extra_host_config})
        if self.user.name == "ben":
            raise RuntimeError("the engine refused the container")
        return self.ip, self.port

    monkeypatch.setattr(DockerSpawner, "start", parent_start)
    ana = spawner("ana")
    assert asyncio.run(ana.start()) == ("127.0.0.1", seen[0]["port"]) == ("127.0.0.1", ana.port)
    assert seen[0]["host"]["device_requests"] == [{"device_ids": ["0"], "capabilities": [["gpu"]]}]
    with pytest.raises(RuntimeError, match="refused"):
        asyncio.run(spawner("ben").start())
    assert Spawner.held == {"ana": 0}
    assert asyncio.run(spawner("chloe", gpus=0).start())[0] == "127.0.0.1"
    assert "device_requests" not in seen[-1]["host"] and Spawner.held == {"ana": 0}
