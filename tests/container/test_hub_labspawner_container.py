"""`vmlab.hub.LabSpawner(provider_name="container")` under a real JupyterHub and configurable-http-proxy on
127.0.0.1: each user's lab is a podman container of conftest's hub_lab_image (the lab image plus
jupyterhub-singleuser), published on 127.0.0.1, its `~/data` synced with the user's own prefix of a bucket on the
moto server (reached from the containers through slirp4netns's host loopback, and through a FaultProxy).

One hub for the module; the tests run in order: a launch whose server never comes up leaves nothing; three users
each get their own container, run a cell over the kernel websocket that writes to ~/data, and reach only their own
server; the budget refuses a fourth; stop keeps the container's volume and start finds the data; a deleted and
re-added user finds their data restored from the bucket (their volumes went with them); a deleted user whose
stopped lab holds a change the bucket refused keeps the lab (logged at ERROR), and deleted again once the bucket
takes it, the agent's kept state pushes the change before everything goes; a stop while starting leaves
nothing; a hub restart reaches the running labs again; a spent budget stops the running labs.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jupyterhub
import psutil
import pytest
import requests

from harness.emulators.jupyterhub import Hub, dummy_login
from harness.emulators.moto import MotoServer, object_text
from harness.faults.awsfaults import FaultProxy
from vmlab.providers.container.engine import Podman

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_hub_dockerspawner import User  # noqa: E402

pytestmark = [pytest.mark.container, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"
STUDENTS = ("ana", "ben", "chloe")
#: dan meets the budget, eve's image has no jupyterhub-singleuser, gus's image does not exist, fay is stopped while
#: starting, hal's spawner was not allowed to share the hub's storage credentials, ivy's lab name is taken, kim is
#: deleted while her stopped lab holds a change the bucket refused
OTHERS = ("dan", "eve", "fay", "gus", "hal", "ivy", "kim", "prof")
BUCKET = "hubdata"
PRICE, BUDGET = 1.0, 3.5  # USD per lab-hour (hourly_usd: containers quote none); three labs fit, a fourth not

CONFIG = """
import os
from traitlets import default
from vmlab.hub.spawner import LabSpawner

os.environ["VMLAB_STATE_DIR"] = {state!r}


class ClassSpawner(LabSpawner):
    @default("image")
    def _eves_image_has_no_singleuser(self):
        return {{"eve": {plain!r}, "gus": "localhost/vmlab/absent:0"}}.get(self.user.name, {image!r})

    @default("share_storage_credentials")
    def _not_for_hal(self):
        return self.user.name != "hal"  # the others share the class key; hal keeps the default (False)


c.JupyterHub.spawner_class = ClassSpawner
{login}
c.LabSpawner.provider_name = "container"
c.LabSpawner.class_name = "cls"
c.LabSpawner.sync_root = "s3://{bucket}/cls"
c.LabSpawner.hourly_usd = {price!r}
c.LabSpawner.budget_usd_per_day = {budget!r}
c.LabSpawner.start_timeout = 240
c.LabSpawner.poll_interval = 1  # the budget is checked at each poll
c.JupyterHub.cleanup_servers = False  # a hub restart keeps the labs
"""


@pytest.fixture(scope="module")
def engine(container_root: Path) -> Iterator[Podman]:
    made = Podman(container_root)
    yield made
    made.call("rm", "-a", "-f", "-v", "-t", "0")
    for volume in made.text("volume", "ls", "-q").split():
        made.call("volume", "rm", "-f", volume)


@pytest.fixture(scope="module")
def s3(moto_server: MotoServer) -> Any:
    import boto3

    client = boto3.client("s3", endpoint_url=moto_server.endpoint)
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture(scope="module")
def store_faults(moto_server: MotoServer) -> Iterator[FaultProxy]:
    """The hub and its labs reach the bucket through this proxy (the tests read it directly)."""
    with FaultProxy(moto_server.endpoint) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def hub(container_root: Path, engine: Podman, hub_lab_image: str, lab_image: str, s3: Any,
        store_faults: FaultProxy, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    work = tmp_path_factory.mktemp("hub")
    config = CONFIG.format(state=str(work / "state"), plain=lab_image, image=hub_lab_image,
                           login=dummy_login(PASSWORD, {*STUDENTS, *OTHERS}), bucket=BUCKET, price=PRICE,
                           budget=BUDGET)
    made = Hub(work, config, env={"VMLAB_CONTAINER_ROOT": str(container_root), "PYTHONPATH": str(ROOT),
                                  "VMLAB_CONTAINER_HOST_LOOPBACK": "1",  # the bucket is on this loopback
                                  "AWS_ENDPOINT_URL": store_faults.endpoint})
    try:
        yield made
    finally:
        made.stop()


@pytest.fixture(scope="module")
def users(hub: Hub) -> Iterator[dict[str, User]]:
    logged = {name: User(hub, name, PASSWORD) for name in (*STUDENTS, *OTHERS)}
    yield logged
    for user in logged.values():
        user.session.close()


def containers(engine: Podman) -> list[str]:
    return sorted(engine.text("ps", "-a", "--format", "{{.Names}}").split())


def volumes(engine: Podman) -> list[str]:
    return sorted(engine.text("volume", "ls", "--format", "{{.Name}}").split())


def lab_volumes(*users: str) -> list[str]:
    """The volumes of these users' labs: data and the agent's state."""
    return sorted(f"vmlab-cls-{user}-{kind}" for user in users for kind in ("agent", "data"))


def records(hub: Hub) -> list[str]:
    labs = hub.workdir / "state" / "labs"
    return sorted(p.name for p in labs.glob("*.json"))


def state(engine: Podman, name: str) -> str:
    return str(engine.json("container", "inspect", name)[0]["State"]["Status"])


def published_port(engine: Podman, name: str) -> int:
    return int(engine.json("container", "inspect", name)[0]["Config"]["Labels"]["vmlab:lab-port"])


def listeners(port: int) -> list[str]:
    out = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True, check=True).stdout
    return [line.split()[3].rsplit(":", 1)[0] for line in out.splitlines() if line.split()[3].endswith(f":{port}")]


def progress_messages(user: User) -> list[str]:
    """Start `user`'s server and read the spawn page's event stream until it says ready (or failed)."""
    hub_api = f"{user.hub.url}/hub/api/users/{user.name}/server"
    assert requests.post(hub_api, headers=user.auth, timeout=60).status_code in (201, 202)
    messages = []
    with requests.get(hub_api + "/progress", headers=user.auth, stream=True, timeout=240) as events:
        for line in events.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                event = json.loads(line[5:])
                messages.append(event.get("message", ""))
                if event.get("ready") or event.get("failed"):
                    break
    return messages


CELL = """\
import os, pathlib
data = pathlib.Path.home() / "data"
(data / "result.txt").write_text(f"{6 * 7} by {os.environ['JUPYTERHUB_USER']}")
print(os.environ["JUPYTERHUB_USER"], str(data), sorted(p.name for p in data.iterdir()))
"""


FROM_INSIDE = """\
import os, urllib.error, urllib.request
token = os.environ["JUPYTERHUB_API_TOKEN"]
request = urllib.request.Request("http://10.0.2.2:{port}/user/ana/api/contents/result.txt",
                                 headers={{"Authorization": "token " + token}})
try:
    print(urllib.request.urlopen(request, timeout=10).status)
except urllib.error.HTTPError as e:
    print(e.code)
"""


def test_the_class_image_has_the_agent_and_jupyterhub_singleuser(engine: Podman, hub_lab_image: str) -> None:
    shown = engine.text("run", "--rm", "--pull", "never", "--network", "none", "--entrypoint", "sh", hub_lab_image,
                        "-c", "/opt/jupyter/bin/jupyterhub-singleuser --version; test -x /opt/vmlab-agent/bin/"
                        "vmlab-agent && echo agent")
    assert shown.split() == [jupyterhub.__version__, "agent"]


def test_a_launch_whose_server_never_answers_leaves_nothing(hub: Hub, engine: Podman,
                                                            users: dict[str, User]) -> None:
    eve = users["eve"]
    server = hub.spawn(eve.session, "eve")
    assert not server.get("ready")
    log = hub.log_path.read_text()
    assert "lab cls-eve stopped while its server was starting" in log, log[-3000:]
    assert "removed lab container" in log, log[-3000:]
    assert containers(engine) == [] and volumes(engine) == [] and records(hub) == []


def test_a_failed_launch_keeps_a_volume_that_was_there_before(hub: Hub, engine: Podman, lab_image: str,
                                                              users: dict[str, User]) -> None:
    """eve's data volume exists (an earlier start, a backup put back), labelled as her lab's: the launch goes
    ahead and fails (her image has no jupyterhub-singleuser), which removes the container and the agent volume it
    made and leaves the data volume, files and all."""
    engine.text("volume", "create", "--label", "vmlab:class=cls", "--label", "vmlab:hub-user=eve",
                "vmlab-cls-eve-data")
    engine.text("run", "--rm", "--pull", "never", "--network", "none", "-v", "vmlab-cls-eve-data:/d", "--entrypoint",
                "sh", lab_image, "-c", "echo from before > /d/old.txt")
    assert not hub.spawn(users["eve"].session, "eve").get("ready")
    assert containers(engine) == [] and volumes(engine) == ["vmlab-cls-eve-data"] and records(hub) == []
    assert "lab cls-eve's data volume belongs to another lab" not in hub.log_path.read_text()  # it was launched
    kept = engine.text("run", "--rm", "--pull", "never", "--network", "none", "-v", "vmlab-cls-eve-data:/d",
                       "--entrypoint", "cat", lab_image, "/d/old.txt")
    assert kept == "from before\n"
    engine.text("volume", "rm", "vmlab-cls-eve-data")


def test_a_missing_image_is_refused_before_anything(hub: Hub, engine: Podman, users: dict[str, User]) -> None:
    assert not hub.spawn(users["gus"].session, "gus").get("ready")
    assert "image 'localhost/vmlab/absent:0' not found for provider container" in hub.log_path.read_text()
    assert containers(engine) == [] and volumes(engine) == [] and records(hub) == []


def test_shared_storage_credentials_are_refused_unless_the_class_allows_them(hub: Hub, engine: Podman,
                                                                            users: dict[str, User]) -> None:
    """A container lab would sync with the hub's own credentials, readable by its student: a hub that did not
    set c.LabSpawner.share_storage_credentials gets a one-line refusal, and nothing is made."""
    assert not hub.spawn(users["hal"].session, "hal").get("ready")
    log = hub.log_path.read_text()
    assert "gives every lab the hub's own storage credentials" in log, log[-3000:]
    assert "c.LabSpawner.share_storage_credentials = True" in log
    assert containers(engine) == [] and volumes(engine) == [] and records(hub) == []


def test_a_lab_of_the_same_name_from_another_class_is_never_taken(hub: Hub, engine: Podman, lab_image: str,
                                                                 users: dict[str, User]) -> None:
    """Class `cls` and user `ivy` make lab `cls-ivy`, as class `cls-ivy`... or a `vmlab up cls-ivy` would: that
    other lab's container and data volume are left alone (not stopped, not mounted), the start refused in one
    line."""
    other = ["--label", "vmlab:lab=cls-ivy", "--label", "vmlab:class=cls-i", "--label", "vmlab:hub-user=vy"]
    engine.text("volume", "create", *other, "vmlab-cls-ivy-data")
    engine.text("run", "-d", "--pull", "never", "--network", "none", "--name", "someone-elses", *other,
                "--entrypoint", "sleep", lab_image, "600")
    try:
        assert not hub.spawn(users["ivy"].session, "ivy").get("ready")
        log = hub.log_path.read_text()
        assert "lab cls-ivy's container belongs to another lab of the same name" in log, log[-3000:]
        assert state(engine, "someone-elses") == "running" and "vmlab-cls-ivy-data" in volumes(engine)
        engine.call("rm", "-f", "-t", "0", "someone-elses")
        assert not hub.spawn(users["ivy"].session, "ivy").get("ready")  # the volume alone is refused too
        assert "lab cls-ivy's data volume belongs to another lab" in hub.log_path.read_text()
        assert containers(engine) == [] and volumes(engine) == ["vmlab-cls-ivy-data"] and records(hub) == []
    finally:
        engine.call("rm", "-f", "-t", "0", "someone-elses")
        engine.call("volume", "rm", "-f", "vmlab-cls-ivy-data")


def test_three_users_run_a_cell_and_reach_only_their_own_server(hub: Hub, engine: Podman, s3: Any,
                                                                users: dict[str, User]) -> None:
    messages = progress_messages(users["ana"])
    steps = ["preparing lab cls-ana", "launching lab cls-ana", "waiting for the lab's server to answer",
             "Server ready"]
    assert [any(m.startswith(step) for m in messages) for step in steps] == [True] * 4, messages
    spawn = {name: users[name].start(timeout=240) for name in STUDENTS[1:]}  # ana's runs
    print(f"spawn to the server answering through the proxy: {spawn}", file=sys.stderr)
    assert containers(engine) == [f"cls-{n}" for n in STUDENTS]
    assert volumes(engine) == lab_volumes(*STUDENTS)
    for name in STUDENTS:
        user = users[name]
        who, folder, files = user.run_cell(CELL).strip().split(" ", 2)
        assert (who, folder, files) == (name, "/root/data", "['result.txt']")  # no other user's files
        got = user.get("/api/contents/result.txt?content=1")
        assert got.status_code == 200 and got.json()["content"] == f"42 by {name}"
        box = engine.json("container", "inspect", f"cls-{name}")[0]
        labels = box["Config"]["Labels"]
        assert (labels["vmlab:class"], labels["vmlab:hub-user"]) == ("cls", name)
        assert sorted(m["Name"] for m in box["Mounts"]) == lab_volumes(name)
        token = next(e.split("=", 1)[1] for e in box["Config"]["Env"] if e.startswith("JUPYTERHUB_API_TOKEN="))
        assert len(token) >= 32 and token not in json.dumps([box["Args"], box["Config"]["Cmd"]])
        assert not [p.pid for p in psutil.process_iter(["cmdline"]) if token in " ".join(p.info["cmdline"] or [])]
        assert listeners(published_port(engine, f"cls-{name}")) == ["127.0.0.1"]
        # the agent pushed it, to its prefix
        assert object_text(s3, BUCKET, f"cls/{name}/result.txt") == f"42 by {name}"
    ana, ben, chloe = (users[n] for n in STUDENTS)
    assert ana.get("/api/contents/result.txt", headers=ben.auth).status_code == 403
    assert ben.get("/api/contents", headers=chloe.auth).status_code == 403
    by_cookie = ben.session.get(ana.server + "/api/contents/result.txt", timeout=30)
    assert by_cookie.status_code == 403 and "42 by ana" not in by_cookie.text
    direct = f"http://127.0.0.1:{published_port(engine, 'cls-ana')}/user/ana/api/contents"  # past the proxy
    assert requests.get(direct, headers=ben.auth, timeout=30).status_code == 403
    assert requests.get(direct, headers=ana.auth, timeout=30).status_code == 200
    # code in ben's lab reaches this machine's loopback (the hub's API is there), so ana's published port too:
    # with the token ben's own server holds, ana's server still says no
    assert ben.run_cell(FROM_INSIDE.format(port=published_port(engine, "cls-ana"))).strip() == "403"


def test_the_budget_refuses_a_fourth_lab(hub: Hub, engine: Podman, users: dict[str, User]) -> None:
    assert not hub.spawn(users["dan"].session, "dan").get("ready")
    assert "cls's budget of $3.50 a day is reached" in hub.log_path.read_text()
    assert "cls-dan" not in containers(engine) and not set(lab_volumes("dan")) & set(volumes(engine))


def test_stop_keeps_the_volume_and_start_finds_the_data(hub: Hub, engine: Podman,
                                                         users: dict[str, User]) -> None:
    ana = users["ana"]
    assert hub.api(ana.session, "DELETE", "users/ana/server").status_code in (202, 204)
    hub.wait_stopped(ana.session, "ana")
    assert state(engine, "cls-ana") == "exited" and "vmlab-cls-ana-data" in volumes(engine)
    again = ana.start(timeout=240)
    print(f"ana's start after a stop: {again:.1f}s", file=sys.stderr)
    assert ana.get("/api/contents/result.txt?content=1").json()["content"] == "42 by ana"
    assert state(engine, "cls-ana") == "running" and containers(engine).count("cls-ana") == 1


def test_a_deleted_user_added_again_finds_the_data_restored_from_the_bucket(
        hub: Hub, engine: Podman, s3: Any, users: dict[str, User]) -> None:
    prof, ben = users["prof"], users["ben"]
    assert hub.api(prof.session, "DELETE", "users/ben").status_code == 204
    assert "cls-ben" not in containers(engine) and not set(lab_volumes("ben")) & set(volumes(engine))
    assert "cls-ben.json" not in records(hub)
    assert object_text(s3, BUCKET, "cls/ben/result.txt") == "42 by ben"  # the bucket prefix stays
    assert hub.api(prof.session, "POST", "users/ben").status_code == 201
    ben = users["ben"] = User(hub, "ben", PASSWORD)
    ben.start(timeout=240)
    got = ben.get("/api/contents/result.txt?content=1")
    assert got.status_code == 200 and got.json()["content"] == "42 by ben"
    assert hub.api(ben.session, "DELETE", "users/ben/server").status_code in (202, 204)  # room in the budget
    hub.wait_stopped(ben.session, "ben")


def test_a_deleted_user_whose_stopped_lab_holds_an_unsynced_change_keeps_the_lab(
        hub: Hub, engine: Podman, s3: Any, store_faults: FaultProxy, users: dict[str, User]) -> None:
    """The bucket refuses kim's change until after her lab stopped: deleting her keeps her lab (container,
    volumes, record) and logs why at ERROR. With only the volumes left (as a failed relaunch leaves them), a
    deletion checks them from the class image and keeps them too. Once the bucket takes the change, deleting her
    (added again) pushes it from the agent's kept state and removes both volumes."""
    prof, kim = users["prof"], users["kim"]
    kim.start(timeout=240)
    action = f"PUT /{BUCKET}/cls/kim/unsaved.txt"
    store_faults.fail(action, nth=None, code="ServiceUnavailable", status=503)
    try:
        engine.text("exec", "cls-kim", "sh", "-c", "printf 'not in the bucket yet\\n' > /root/data/unsaved.txt")
        assert store_faults.wait_for(action, timeout=60), store_faults.calls[-20:]
        assert hub.api(kim.session, "DELETE", "users/kim/server").status_code in (202, 204)
        hub.wait_stopped(kim.session, "kim")
        started = time.monotonic()
        assert hub.api(prof.session, "DELETE", "users/kim").status_code == 204
        print(f"kim's deletion, refused by the check: {time.monotonic() - started:.1f}s", file=sys.stderr)
        assert state(engine, "cls-kim") == "exited" and set(lab_volumes("kim")) <= set(volumes(engine))
        assert "cls-kim.json" in records(hub)
        assert kept_lines(hub) == 1
        engine.text("rm", "cls-kim")  # only the volumes are left now
        (hub.workdir / "state" / "labs" / "cls-kim.json").unlink()
        assert hub.api(prof.session, "POST", "users/kim").status_code == 201
        assert hub.api(prof.session, "DELETE", "users/kim").status_code == 204
        assert set(lab_volumes("kim")) <= set(volumes(engine)) and kept_lines(hub) == 2
    finally:
        store_faults.reset()
    assert object_text(s3, BUCKET, "cls/kim/unsaved.txt", timeout=0) is None
    assert hub.api(prof.session, "POST", "users/kim").status_code == 201
    started = time.monotonic()
    assert hub.api(prof.session, "DELETE", "users/kim").status_code == 204
    print(f"kim's deletion, flushed then removed: {time.monotonic() - started:.1f}s", file=sys.stderr)
    assert object_text(s3, BUCKET, "cls/kim/unsaved.txt", timeout=0) == "not in the bucket yet\n"
    assert not set(lab_volumes("kim")) & set(volumes(engine)) and kept_lines(hub) == 2


def kept_lines(hub: Hub) -> int:
    """How many times the hub logged at ERROR that it kept kim's lab, saying why."""
    log = hub.log_path.read_text()
    kept = [line for line in log.splitlines() if "lab cls-kim: kept, with its data" in line]
    assert all(line.startswith("[E ") and "lab cls-kim has data not yet synced" in line for line in kept), kept
    return len(kept)


def test_a_stop_while_starting_leaves_nothing(hub: Hub, engine: Podman, users: dict[str, User]) -> None:
    fay = users["fay"]
    assert hub.api(fay.session, "POST", "users/fay/server").status_code == 202
    deadline = time.monotonic() + 60
    while "cls-fay" not in containers(engine):  # the container exists (its server starting) before the stop
        assert time.monotonic() < deadline, hub.log_path.read_text()[-3000:]
        time.sleep(0.1)
    assert hub.api(fay.session, "DELETE", "users/fay/server").status_code in (202, 204)
    hub.wait_stopped(fay.session, "fay")
    deadline = time.monotonic() + 30
    while "cls-fay" in containers(engine):
        assert time.monotonic() < deadline, "the cancelled launch left its container"
        time.sleep(0.2)
    assert not set(lab_volumes("fay")) & set(volumes(engine)) and "cls-fay.json" not in records(hub)
    deadline = time.monotonic() + 10  # the hub logs the launch's end after it answered the stop
    while "the start of lab cls-fay was cancelled" not in hub.log_path.read_text():
        assert time.monotonic() < deadline, hub.log_path.read_text()[-3000:]
        time.sleep(0.2)


def test_a_hub_restart_reaches_the_running_labs_again(hub: Hub, engine: Podman, users: dict[str, User]) -> None:
    hub.restart()
    assert state(engine, "cls-chloe") == "running"
    chloe = users["chloe"]
    got = chloe.get("/api/contents/result.txt?content=1")
    assert got.status_code == 200 and got.json()["content"] == "42 by chloe"


def test_a_spent_budget_stops_the_running_labs(hub: Hub, engine: Podman, users: dict[str, User]) -> None:
    running = [n for n in STUDENTS if state(engine, f"cls-{n}") == "running"]
    assert running == ["ana", "chloe"]  # ben was stopped
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    (hub.workdir / "state" / "hub" / "cls-spend.json").write_text(json.dumps({today: BUDGET}))  # earlier sessions
    for name in running:
        hub.wait_stopped(users[name].session, name, timeout=60)
        assert state(engine, f"cls-{name}") == "exited", "the lab must be stopped, its volume kept"
    assert volumes(engine) == lab_volumes(*STUDENTS)
    assert "class cls spent its budget: stopping lab" in hub.log_path.read_text()
    assert not hub.spawn(users["ana"].session, "ana").get("ready")  # and no new start while it is spent
