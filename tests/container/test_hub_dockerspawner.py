"""recipes/jupyterhub.py with `hub_spawner=docker` against a real JupyterHub, configurable-http-proxy, the idle
culler and podman's Docker-compatible API over the container provider's engine root (so DockerSpawner finds the
image vmlab baked). Three users log in, each gets a container of the image, runs a cell over the kernel
websocket that writes to `~/data`, cannot reach another user's server or volume, is culled when idle, and finds
the data on the next start. The image is also checked against KubeSpawner's contract (no Kubernetes here).

The user image is baked from tests/container/recipes/hub_user.py with the hub's own JupyterHub version, once per
machine: it is saved to the shared test cache and loaded from there next time (a bake takes about 3 minutes)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jupyterhub
import jupyterlab
import psutil
import pytest
import requests
import websocket

from harness.emulators.jupyterhub import Hub
from harness.emulators.podman_api import PodmanAPI
from harness.emulators.sshd import free_port
from harness.plumbing.serverproc import http_answers
from vmlab.providers.container.engine import Podman

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from test_hub_accounts import make_accounts, passwords  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_recipe_jupyterhub import hub as hub_recap  # noqa: E402
from test_recipe_jupyterhub import written  # noqa: E402

pytestmark = [pytest.mark.container, pytest.mark.timeout(900)]
RECIPES = Path(__file__).parent / "recipes"
SHARED_CACHE = Path(os.environ.get("VMLAB_TEST_CACHE", "/var/tmp/vmlab-test-cache")) / "container"  # as conftest's
HUB_MODULE = Path(__file__).resolve().parents[2] / "recipes" / "files" / "hub_docker.py"
USERS = ["ana", "ben", "chloe"]
CULL_SECONDS = 30


@pytest.fixture(scope="session")
def user_image(container_root: Path) -> str:
    """The hub_user recipe baked with this JupyterHub's version (from the shared cache when it is there)."""
    engine = Podman(container_root)
    recipe = RECIPES / "hub_user.py"
    versions = {"jupyterhub_spec": f"jupyterhub=={jupyterhub.__version__}",
                "jupyterlab_spec": f"jupyterlab=={jupyterlab.__version__}"}
    key = hashlib.sha256((recipe.read_text() + json.dumps(versions, sort_keys=True)).encode()).hexdigest()[:12]
    cached = SHARED_CACHE / f"hub-user-{key}.tar"
    if cached.is_file():
        loaded = engine.text("load", "-q", "-i", str(cached), what="loading the cached hub user image")
        return loaded.strip().rsplit(" ", 1)[-1]  # "Loaded image: REF"
    from click.testing import CliRunner

    from vmlab.cli import cli

    started = time.monotonic()
    args = ["bake", str(recipe), "--provider", "container", "--json"]
    for name, value in versions.items():
        args += ["-e", f"{name}={value}"]
    result = CliRunner().invoke(cli, args, env={"VMLAB_CONTAINER_ROOT": str(container_root)},
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    print(f"hub user image baked in {time.monotonic() - started:.0f}s", file=sys.stderr)
    image_id = json.loads(result.stdout)["image"]
    ref = engine.json("image", "inspect", image_id)[0]["RepoTags"][0]
    SHARED_CACHE.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(".partial")
    engine.text("save", "-q", "--format", "docker-archive", "-o", str(partial), ref, what="saving the hub user image")
    partial.rename(cached)
    return str(ref)


@pytest.fixture()
def docker_api(container_root: Path, tmp_path: Path) -> Iterator[PodmanAPI]:
    """podman's Docker API on a socket under tmp_path; every hub container and volume is removed afterwards."""
    engine = Podman(container_root)
    api = PodmanAPI(engine, tmp_path)
    try:
        yield api
    finally:
        api.stop()
        engine.call("rm", "-f", "-v", "-t", "0", *hub_containers(engine))
        for volume in engine.text("volume", "ls", "-q").split():
            if volume.startswith("vmlab-hub-") or volume == "class-data":
                engine.call("volume", "rm", "-f", volume)


def hub_containers(engine: Podman) -> list[str]:
    return engine.text("ps", "-a", "--filter", "label=vmlab:hub", "--format", "{{.Names}}").split()


def listening(pids: set[int]) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket these processes listen on."""
    found = set()
    for pid in pids:
        try:
            for conn in psutil.Process(pid).net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN:
                    found.add((conn.laddr.ip, conn.laddr.port))
        except psutil.NoSuchProcess:
            continue
    return found


def tree(pid: int) -> set[int]:
    try:
        root = psutil.Process(pid)
        return {pid, *(p.pid for p in root.children(recursive=True))}
    except psutil.NoSuchProcess:
        return set()


class User:
    """One hub user seen from outside: their hub token and their server behind the proxy."""

    def __init__(self, hub: Hub, name: str, password: str) -> None:
        self.hub, self.name = hub, name
        self.session = hub.session(name, password)
        got = self.session.post(f"{hub.url}/hub/api/users/{name}/tokens", json={"note": "test"}, timeout=30)
        assert got.status_code == 201, got.text
        self.token = got.json()["token"]
        self.auth = {"Authorization": f"token {self.token}"}
        self.server = f"{hub.url}/user/{name}"

    def model(self) -> dict[str, Any]:
        got = requests.get(f"{self.hub.url}/hub/api/users/{self.name}", headers=self.auth, timeout=30)
        got.raise_for_status()
        return got.json()

    def start(self, timeout: float = 180) -> float:
        """Start the server; seconds until its REST API answers through the proxy."""
        started = time.monotonic()
        got = requests.post(f"{self.hub.url}/hub/api/users/{self.name}/server", headers=self.auth, timeout=60)
        assert got.status_code in (201, 202), got.text
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self.get("/api/status").status_code == 200:
                return time.monotonic() - started
            time.sleep(0.2)
        log = self.hub.log_path.read_text()[-3000:]
        raise TimeoutError(f"{self.name}'s server did not answer in {timeout} s:\n{log}")

    def get(self, path: str, headers: dict[str, str] | None = None) -> requests.Response:
        return requests.get(self.server + path, headers=self.auth if headers is None else headers,
                            allow_redirects=False, timeout=30)

    def run_cell(self, code: str) -> str:
        """Execute `code` in a new kernel over the kernel websocket (through the proxy); its stdout."""
        made = requests.post(self.server + "/api/kernels", headers=self.auth, json={"name": "python3"}, timeout=60)
        assert made.status_code == 201, made.text
        kernel = made.json()["id"]
        ws = websocket.create_connection(f"{self.server.replace('http', 'ws', 1)}/api/kernels/{kernel}/channels",
                                         header=[f"Authorization: token {self.token}"], timeout=120)
        try:
            msg_id = uuid.uuid4().hex
            ws.send(json.dumps({
                "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": self.name,
                           "session": uuid.uuid4().hex, "version": "5.3", "date": ""},
                "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                            "allow_stdin": False, "stop_on_error": True}}))
            out = []
            while True:
                msg = json.loads(ws.recv())
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind = msg["msg_type"]
                if kind == "stream":
                    out.append(msg["content"]["text"])
                elif kind == "error":
                    raise AssertionError(f"the cell failed: {msg['content']['ename']}: {msg['content']['evalue']}")
                elif kind == "status" and msg["content"]["execution_state"] == "idle":
                    return "".join(out)
        finally:
            ws.close()
            requests.delete(f"{self.server}/api/kernels/{kernel}", headers=self.auth, timeout=30)


CELL = """\
import os, pathlib
data = pathlib.Path.home() / "data"
(data / "result.txt").write_text(f"{6 * 7} by {os.environ['JUPYTERHUB_USER']}")
try:
    (pathlib.Path.home() / "shared" / "mine.txt").write_text("x")
    shared = "writable"
except OSError:
    shared = "read-only"
print(os.getuid(), os.environ["HOME"], sorted(p.name for p in data.iterdir()), shared,
      (pathlib.Path.home() / "shared" / "readme.txt").read_text().strip())
"""


def test_three_users_get_containers_are_isolated_culled_and_keep_their_data(
        tmp_path: Path, container_root: Path, user_image: str, docker_api: PodmanAPI) -> None:
    engine = Podman(container_root)
    # the class's shared, read-only data
    engine.text("volume", "create", "class-data")
    engine.text("run", "--rm", "--pull", "never", "--network", "none", "-v", "class-data:/d", user_image,
                "sh", "-c", "echo course notes > /d/readme.txt")
    recap = hub_recap({"hub_spawner": "docker", "hub_users": USERS, "hub_admins": ["ana"], "hub_image": user_image,
                       "hub_image_user": "jovyan", "hub_image_pull": "never", "hub_shared_volume": "class-data",
                       "hub_cpu_limit": 1, "hub_mem_limit": "768M", "hub_cull_idle": CULL_SECONDS})
    given = passwords(make_accounts(recap, tmp_path))
    shutil.copy(HUB_MODULE, tmp_path / "vmlab_hub_docker.py")  # /etc/jupyterhub/ on a hub host
    config = written(recap, "hub settings") + (
        "# ---- test machine only: the culler from this venv; servers report activity every 5 s (not 300 s)\n"
        f"c.JupyterHub.services[0]['command'][0] = {sys.executable!r}\n"
        "c.DockerSpawner.environment = {'JUPYTERHUB_ACTIVITY_INTERVAL': '5'}\n")
    hub = Hub(tmp_path, config, services=True, env={"DOCKER_HOST": docker_api.url})
    try:
        users = {name: User(hub, name, given[name]) for name in USERS}
        spawn = {name: user.start() for name, user in users.items()}
        print(f"spawn to JupyterLab answering through the proxy: {spawn}", file=sys.stderr)
        assert sorted(hub_containers(engine)) == [f"vmlab-hub-{n}" for n in sorted(USERS)]

        for name, user in users.items():
            uid, home, files, shared, notes = user.run_cell(CELL).strip().split(" ", 4)
            assert uid != "0" and home == "/home/jovyan" and "result.txt" in files
            assert (shared, notes) == ("read-only", "course notes")
            assert files == "['result.txt']"  # only this user's own volume, nobody else's files
            got = user.get("/api/contents/result.txt?content=1")
            assert got.status_code == 200 and got.json()["content"] == f"42 by {name}"

            box = engine.json("container", "inspect", f"vmlab-hub-{name}")[0]
            mounts = {m["Name"]: m["RW"] for m in box["Mounts"]}
            assert mounts == {f"vmlab-hub-{name}": True, "class-data": False}
            assert box["HostConfig"]["Memory"] == 768 * 2**20
            assert box["HostConfig"]["CpuQuota"] == 100_000 and box["HostConfig"]["NetworkMode"] == "host"

        # another user's token or cookie is refused by each server, through the proxy (an admin's is not: JupyterHub's
        # admin role may open every server, which is why hub_admins should list only instructors)
        ana, ben, chloe = users["ana"], users["ben"], users["chloe"]
        assert ana.get("/api/contents/result.txt", headers=ben.auth).status_code == 403
        assert ben.get("/api/contents", headers=chloe.auth).status_code == 403
        assert chloe.get("/api/contents", headers=ben.auth).status_code == 403
        by_cookie = ben.session.get(ana.server + "/api/contents/result.txt", timeout=30)
        assert by_cookie.status_code == 403 and "42 by ana" not in by_cookie.text
        assert ana.get("/api/contents", headers={}).status_code in (302, 403)  # no credentials: to the login
        assert ben.get("/api/contents", headers=ana.auth).status_code == 200

        # the hub, the proxy, the culler and every user's server listen on 127.0.0.1 only
        pids = tree(hub.proc.pid)
        for name in USERS:
            pids |= tree(engine.json("container", "inspect", f"vmlab-hub-{name}")[0]["State"]["Pid"])
        sockets = listening(pids)
        assert {("127.0.0.1", port) for port in hub.ports.values()} <= sockets
        assert {address for address, _ in sockets} == {"127.0.0.1"}, sockets

        # idle: the culler stops every server; the containers go, the volumes stay
        deadline = time.monotonic() + CULL_SECONDS * 4 + 60
        while time.monotonic() < deadline and any(user.model()["servers"] for user in users.values()):
            time.sleep(2)
        assert not any(user.model()["servers"] for user in users.values()), hub.log_path.read_text()[-3000:]
        assert hub_containers(engine) == []
        assert {f"vmlab-hub-{n}" for n in USERS} <= set(engine.text("volume", "ls", "-q").split())

        # the next start finds the data
        again = ana.start()
        print(f"ana's second start: {again:.1f}s", file=sys.stderr)
        assert ana.get("/api/contents/result.txt?content=1").json()["content"] == "42 by ana"
    finally:
        hub.stop()


def test_image_meets_kubespawners_contract(tmp_path: Path, container_root: Path, user_image: str) -> None:
    """What KubeSpawner (Zero to JupyterHub) needs from an image, checked with podman: `jupyterhub-singleuser` on
    the PATH at the hub's version; a non-root uid (z2jh's default `singleuser.uid: 1000`) with a home; the server
    listening where JUPYTERHUB_SERVICE_URL says, with no argument, answering its readiness probe there (it checks
    the hub's API at start, so a real hub runs beside it)."""
    engine = Podman(container_root)
    shown = engine.text("run", "--rm", "--pull", "never", "--network", "none", "--user", "1000", user_image,
                        "sh", "-c", 'id -u; echo "$HOME"; test -w "$HOME"; jupyterhub-singleuser --version')
    uid, home, version = shown.split()
    assert uid == "1000" and home == "/home/jovyan" and version == jupyterhub.__version__

    hub = Hub(tmp_path, "c = get_config()  # noqa: F821\n")
    port = free_port()
    env = {"JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}/user/kube/", "JUPYTERHUB_USER": "kube",
           "JUPYTERHUB_API_TOKEN": uuid.uuid4().hex, "JUPYTERHUB_CLIENT_ID": "jupyterhub-user-kube",
           "JUPYTERHUB_API_URL": f"http://127.0.0.1:{hub.ports['hub']}/hub/api",
           "JUPYTERHUB_BASE_URL": "/", "JUPYTERHUB_SERVICE_PREFIX": "/user/kube/",
           "JUPYTERHUB_OAUTH_CALLBACK_URL": "/user/kube/oauth_callback"}
    name = f"vmlab-kube-{uuid.uuid4().hex[:8]}"
    args = ["run", "-d", "--pull", "never", "--network", "host", "--user", "1000", "--name", name]
    for key in env:
        args += ["--env", key]  # the values come from the environment podman runs in, not its command line
    proc = subprocess.Popen(["podman", *args, user_image, "jupyterhub-singleuser"], env={**engine.env(), **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        probe, deadline = http_answers(f"http://127.0.0.1:{port}/user/kube/api"), time.monotonic() + 120
        while not probe() and time.monotonic() < deadline:
            time.sleep(0.2)
        answer = requests.get(f"http://127.0.0.1:{port}/user/kube/api", timeout=10) if probe() else None
        assert answer is not None and answer.status_code == 200, engine.call("logs", name).stderr.decode()[-2000:]
        assert "version" in answer.json()
        assert requests.get(f"http://127.0.0.1:{port}/user/kube/api/contents", timeout=10).status_code in (302, 403)
    finally:
        engine.call("rm", "-f", "-t", "0", name)
        hub.stop()


def test_a_spawn_that_fails_leaves_no_container(tmp_path: Path, container_root: Path, user_image: str,
                                                docker_api: PodmanAPI) -> None:
    """An image the engine does not have (and may not pull): the spawn fails (the engine's reason in the hub's log),
    the user has no server, and no container is left behind."""
    engine = Podman(container_root)
    recap = hub_recap({"hub_spawner": "docker", "hub_users": ["ana"], "hub_image": "localhost/vmlab/absent:0",
                       "hub_image_pull": "never"})
    given = passwords(make_accounts(recap, tmp_path))
    shutil.copy(HUB_MODULE, tmp_path / "vmlab_hub_docker.py")
    hub = Hub(tmp_path, written(recap, "hub settings"), env={"DOCKER_HOST": docker_api.url})
    try:
        ana = User(hub, "ana", given["ana"])
        with pytest.raises(AssertionError, match="500"):
            ana.start()
        assert "No such image" in hub.log_path.read_text()  # the engine's reason, in the hub's log
        assert ana.model()["servers"] == {} and hub_containers(engine) == []
    finally:
        hub.stop()


def test_ten_servers_start_at_once(tmp_path: Path, container_root: Path, user_image: str,
                                   docker_api: PodmanAPI) -> None:
    """Ten users press start together on this 2-core machine: every server comes up and answers its own user
    (no timing asserted; the times are printed)."""
    from concurrent.futures import ThreadPoolExecutor

    engine = Podman(container_root)
    names = [f"user{i:02d}" for i in range(1, 11)]
    recap = hub_recap({"hub_spawner": "docker", "hub_users": names, "hub_image": user_image,
                       "hub_image_user": "jovyan", "hub_image_pull": "never"})
    given = passwords(make_accounts(recap, tmp_path))
    shutil.copy(HUB_MODULE, tmp_path / "vmlab_hub_docker.py")
    hub = Hub(tmp_path, written(recap, "hub settings"), env={"DOCKER_HOST": docker_api.url})
    try:
        users = [User(hub, name, given[name]) for name in names]
        started = time.monotonic()
        with ThreadPoolExecutor(len(users)) as pool:
            spawn = dict(zip(names, pool.map(lambda user: user.start(timeout=300), users), strict=True))
        wall = time.monotonic() - started
        print(f"10 concurrent spawns: all answering after {wall:.1f}s; per user {spawn}", file=sys.stderr)
        assert sorted(hub_containers(engine)) == [f"vmlab-hub-{n}" for n in names]
        for user in users:
            assert user.get("/api/status").status_code == 200
            assert user.get("/api/status", headers=users[0].auth).status_code == (200 if user is users[0] else 403)
    finally:
        hub.stop()


def test_a_hub_restart_leaves_servers_running(tmp_path: Path, container_root: Path, user_image: str,
                                              docker_api: PodmanAPI) -> None:
    """The hub stops (new settings, an upgrade) while a user works: the container keeps running, and the restarted
    hub (same database, ports) routes to it again, at the port kept in the spawner's state."""
    engine = Podman(container_root)
    recap = hub_recap({"hub_spawner": "docker", "hub_users": ["ana"], "hub_image": user_image,
                       "hub_image_user": "jovyan", "hub_image_pull": "never"})
    given = passwords(make_accounts(recap, tmp_path))
    shutil.copy(HUB_MODULE, tmp_path / "vmlab_hub_docker.py")
    config = written(recap, "hub settings")
    hub = Hub(tmp_path, config, env={"DOCKER_HOST": docker_api.url})
    try:
        ana = User(hub, "ana", given["ana"])
        ana.start()
        made = requests.put(ana.server + "/api/contents/notes.txt", headers=ana.auth, timeout=30,
                            json={"type": "file", "format": "text", "content": "before the restart"})
        assert made.status_code == 201, made.text
    finally:
        hub.stop()
    assert hub_containers(engine) == ["vmlab-hub-ana"]
    assert engine.json("container", "inspect", "vmlab-hub-ana")[0]["State"]["Running"]

    again = Hub(tmp_path, config, env={"DOCKER_HOST": docker_api.url}, ports=hub.ports)
    try:
        deadline = time.monotonic() + 60
        while ana.get("/api/contents/notes.txt").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        got = ana.get("/api/contents/notes.txt?content=1")
        assert got.status_code == 200 and got.json()["content"] == "before the restart"
    finally:
        again.stop()
