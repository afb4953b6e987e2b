"""`vmlab.hub.LabSpawner` under a real JupyterHub and configurable-http-proxy on 127.0.0.1: each user's lab is a
throwaway sandbox host with a real sshd (harness/clouds/sandboxprovider.py, served to the hub process over
XML-RPC), running the real jupyterhub-singleuser of the test venv, reached through the spawner's SSH tunnel.

One hub for the module; the tests run in order: a launch that cannot finish leaves nothing; three users each get
their own lab and reach only their own server through the proxy; the class budget refuses a fourth; stop keeps
the lab and start resumes the same one; deleting a user removes their lab; a stop while starting and the hub's
start timeout remove the launch; a budget spent stops the running labs.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.clouds.sandboxprovider import URL_ENV, Cloud, CloudServer, open_cloud
from harness.drivers.ec2cli import run_vmlab
from harness.emulators.jupyterhub import Hub, dummy_login

pytestmark = pytest.mark.sshd

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"
STUDENTS = ("ana", "ben", "chloe")
#: dan meets the budget, eve's lab never answers SSH, fay is stopped while starting, gil's start times out,
#: "x.y" cannot name a lab (JupyterHub accepts the name)
OTHERS = ("dan", "eve", "fay", "gil", "x.y", "prof")
SINGLEUSER = str(Path(sys.executable).parent / "jupyterhub-singleuser")
PRICE = 1.0  # USD/hour of the class's instance type
BUDGET = 3.5  # three labs fit (spent + an hour of each <= 3.5), a fourth does not

CONFIG = """
import os
import socket
from traitlets import default
from vmlab.hub.spawner import LabSpawner
from vmlab.providers import PROVIDERS

PROVIDERS["sandbox"] = "harness.clouds.sandboxprovider:RemoteSandboxProvider"
os.environ["VMLAB_STATE_DIR"] = {state!r}  # as docs/hub.md does: the labs' records stay put across restarts


def free_port(_spawner):
    # every sandbox shares this machine's loopback (on a VM each lab has its own): one port per server
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ClassSpawner(LabSpawner):
    @default("start_timeout")
    def _short_for_gil(self):
        return 3 if self.user.name == "gil" else 120


c.JupyterHub.spawner_class = ClassSpawner
{login}
c.LabSpawner.provider_name = "sandbox"
c.LabSpawner.class_name = "cls"
c.LabSpawner.image = {image!r}
c.LabSpawner.instance_type = "sbx.small"
c.LabSpawner.budget_usd_per_day = {budget!r}
c.LabSpawner.singleuser_command = {singleuser!r}
c.LabSpawner.connect_timeout = 6
c.LabSpawner.lab_port = free_port
c.LabSpawner.lab_hub_port = free_port
c.LabSpawner.poll_interval = 1  # the budget is checked at each poll
c.JupyterHub.cleanup_servers = False  # a hub restart keeps the labs
"""


@pytest.fixture(scope="module")
def cloud() -> Iterator[Cloud]:
    with open_cloud(quotes=True) as sandboxes:
        sandboxes.prices["sbx.small"] = PRICE
        yield sandboxes


@pytest.fixture(scope="module")
def hub(cloud: Cloud, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    image = cloud.add_image("class-image", {"vmlab:recipe-hash": "test"})
    work = tmp_path_factory.mktemp("hub")
    saved = {k: os.environ.get(k) for k in (URL_ENV, "PYTHONPATH")}
    with CloudServer(cloud) as server:
        os.environ.update({URL_ENV: server.url, "PYTHONPATH": str(ROOT)})
        users = {*STUDENTS, *OTHERS}
        hub = Hub(work, CONFIG.format(login=dummy_login(PASSWORD, users), image=image.id, budget=BUDGET,
                                      singleuser=SINGLEUSER, state=str(work / "state")))
        try:
            yield hub
        finally:
            hub.stop()
            for key, value in saved.items():
                os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


def tagged(cloud: Cloud, user: str) -> list[str]:
    """Live instances tagged as `user`'s lab."""
    return [i.id for i in cloud.instances.values() if i.tags.get("vmlab:lab") == f"cls-{user}"]


def get(hub: Hub, s: Any, path: str) -> Any:
    """A browser's GET through the proxy (following the hub's OAuth redirects)."""
    return s.get(hub.url + path, timeout=60)


@pytest.fixture(scope="module")
def sessions(hub: Hub) -> Iterator[dict[str, Any]]:
    logged = {user: hub.session(user, PASSWORD) for user in (*STUDENTS, *OTHERS)}
    yield logged
    for s in logged.values():
        s.close()


def test_a_user_name_that_cannot_name_a_lab_is_refused_before_anything(hub: Hub, cloud: Cloud,
                                                                        sessions: dict[str, Any]) -> None:
    launched = len(cloud.launched)
    assert not hub.spawn(sessions["x.y"], "x.y").get("ready")
    assert len(cloud.launched) == launched
    assert "user name 'x.y' cannot name a lab" in hub.log_path.read_text()


def test_a_launch_that_cannot_finish_leaves_nothing_behind(hub: Hub, cloud: Cloud,
                                                           sessions: dict[str, Any]) -> None:
    cloud.hold_boot.add("cls-eve")  # its sandbox never answers SSH: `up` gives up after connect_timeout
    launched = len(cloud.launched)
    server = hub.spawn(sessions["eve"], "eve")
    assert not server.get("ready")
    assert len(cloud.launched) == launched + 1, "the launch must have made an instance"
    assert tagged(cloud, "eve") == [], "the failed launch left its instance"
    labs = hub.workdir / "state" / "labs"
    assert labs.is_dir() and not [p.name for p in labs.rglob("*cls-eve*")], "the failed launch left its key or record"
    log = hub.log_path.read_text()
    assert "cannot SSH to cls-eve" in log and "lab cls-eve: removed instance" in log, log[-3000:]


def progress_messages(hub: Hub, s: Any, user: str) -> list[str]:
    """Start `user`'s server and read the spawn page's event stream until it says ready (or failed)."""
    assert hub.api(s, "POST", f"users/{user}/server").status_code == 202
    messages = []
    with s.get(f"{hub.url}/hub/api/users/{user}/server/progress", stream=True, timeout=120) as events:
        for line in events.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                event = json.loads(line[5:])
                messages.append(event.get("message", ""))
                if event.get("ready") or event.get("failed"):
                    break
    return messages


def test_three_students_each_reach_their_own_lab_only(hub: Hub, cloud: Cloud, sessions: dict[str, Any]) -> None:
    messages = progress_messages(hub, sessions["ana"], "ana")
    steps = ["launching lab cls-ana", "waiting for SSH", "opening the SSH tunnel", "starting jupyterhub-singleuser"]
    assert [any(m.startswith(step) for m in messages) for step in steps] == [True] * 4, messages
    for user in STUDENTS:
        server = hub.spawn(sessions[user], user)
        assert server.get("ready"), (user, server, hub.log_path.read_text()[-3000:])
    labs = {user: tagged(cloud, user) for user in STUDENTS}
    assert all(len(ids) == 1 for ids in labs.values()) and len({i[0] for i in labs.values()}) == 3, labs
    for user in STUDENTS:
        inst = cloud.instances[labs[user][0]]
        assert (inst.tags["vmlab:class"], inst.tags["vmlab:hub-user"], inst.state) == ("cls", user, "running")
        # a browser opens the lab: the server sends it through the hub's OAuth, which knows the user
        page = get(hub, sessions[user], f"/user/{user}/lab")
        assert page.status_code == 200 and page.url.startswith(f"{hub.url}/user/{user}/lab"), page.url
        page = get(hub, sessions[user], f"/user/{user}/api/status")
        assert page.status_code == 200 and "started" in page.json(), page.text[:300]
        # the lab's server serves ~/data of its own sandbox: a file written there is that user's alone
        contents = get(hub, sessions[user], f"/user/{user}/api/contents")
        assert contents.status_code == 200, contents.text[:300]
    # the instructor's view: `vmlab ls --class` on the hub machine (its vmlab state dir)
    listed = run_vmlab("ls", "--class", "cls", "--provider", "sandbox", "--json",
                       env={"VMLAB_STATE_DIR": str(hub.workdir / "state")})
    assert listed.exit_code == 0, listed.output
    rows = {r["name"]: r for r in json.loads(listed.stdout)["labs"]}
    assert set(rows) == {f"cls-{u}" for u in STUDENTS}, rows
    for row in rows.values():
        assert row["state"] == "running" and row["hourly_price"] == PRICE and row["uptime_s"] is not None
        assert row["cost_so_far"] is not None and row["cost_so_far"] < PRICE
    for user, other in zip(STUDENTS, (*STUDENTS[1:], STUDENTS[0]), strict=True):
        for path in ("lab", "api/contents"):
            page = get(hub, sessions[user], f"/user/{other}/{path}")
            assert page.status_code == 403, (user, other, path, page.status_code, page.url, page.text[:300])


def test_the_class_budget_refuses_the_next_lab(hub: Hub, cloud: Cloud, sessions: dict[str, Any]) -> None:
    launched = len(cloud.launched)
    server = hub.spawn(sessions["dan"], "dan")
    assert not server.get("ready")
    assert len(cloud.launched) == launched and tagged(cloud, "dan") == []
    assert "budget of $3.50 a day is reached" in hub.log_path.read_text()


def test_stop_keeps_the_lab_and_start_resumes_it(hub: Hub, cloud: Cloud, sessions: dict[str, Any]) -> None:
    s = sessions["ana"]
    (lab,) = tagged(cloud, "ana")
    cloud.boxes[lab].path("/root/data/notes.txt").write_text("kept\n")
    stopped = hub.api(s, "DELETE", "users/ana/server")
    assert stopped.status_code in (202, 204), stopped.text
    hub.wait_stopped(s, "ana")
    assert cloud.instances[lab].state == "stopped" and lab not in cloud.boxes
    assert hub.spawn(s, "ana").get("ready")
    assert tagged(cloud, "ana") == [lab] and cloud.instances[lab].state == "running"
    assert get(hub, s, "/user/ana/lab").status_code == 200  # a new server: through the hub's OAuth again
    page = get(hub, s, "/user/ana/api/contents/notes.txt")
    assert page.status_code == 200 and page.json()["content"] == "kept\n", page.text[:300]


def test_deleting_a_user_removes_their_lab(hub: Hub, cloud: Cloud, sessions: dict[str, Any]) -> None:
    assert tagged(cloud, "ben")
    deleted = hub.api(sessions["prof"], "DELETE", "users/ben")
    assert deleted.status_code == 204, deleted.text
    assert tagged(cloud, "ben") == []


def test_a_hub_restart_keeps_the_labs_and_reaches_them_again(hub: Hub, cloud: Cloud,
                                                              sessions: dict[str, Any]) -> None:
    (lab,) = tagged(cloud, "ana")
    hub.restart()
    assert cloud.instances[lab].state == "running"
    assert hub.server(sessions["ana"], "ana").get("ready")
    page = get(hub, sessions["ana"], "/user/ana/api/status")  # the spawner's tunnel is held again
    assert page.status_code == 200 and "started" in page.json(), page.text[:300]


def test_a_stop_while_starting_removes_the_launch(hub: Hub, cloud: Cloud, sessions: dict[str, Any]) -> None:
    s, launched = sessions["fay"], len(cloud.launched)
    cloud.slow_launch["cls-fay"] = 4.0
    assert hub.api(s, "POST", "users/fay/server").status_code == 202
    deadline = time.monotonic() + 10
    while len(cloud.launched) == launched:  # the instance exists (pending) before the stop
        assert time.monotonic() < deadline, "the launch never started"
        time.sleep(0.1)
    assert tagged(cloud, "fay")
    stopped = hub.api(s, "DELETE", "users/fay/server")
    assert stopped.status_code in (202, 204), stopped.text
    hub.wait_stopped(s, "fay")
    deadline = time.monotonic() + 30
    while tagged(cloud, "fay"):
        assert time.monotonic() < deadline, "the stopped launch left its instance"
        time.sleep(0.2)
    assert "the start of lab cls-fay was cancelled" in hub.log_path.read_text()


def test_the_hubs_start_timeout_removes_the_launch(hub: Hub, cloud: Cloud, sessions: dict[str, Any]) -> None:
    launched = len(cloud.launched)
    cloud.slow_launch["cls-gil"] = 6.0  # longer than gil's start_timeout (3 s)
    server = hub.spawn(sessions["gil"], "gil")
    assert not server.get("ready") and len(cloud.launched) == launched + 1
    deadline = time.monotonic() + 30
    while tagged(cloud, "gil"):
        assert time.monotonic() < deadline, "the timed-out launch left its instance"
        time.sleep(0.2)
    log = hub.log_path.read_text()
    assert "the start of lab cls-gil was cancelled" in log and "lab cls-gil: removed instance" in log, log[-3000:]


def test_a_spent_budget_stops_the_running_labs(hub: Hub, cloud: Cloud, sessions: dict[str, Any]) -> None:
    running = {u: tagged(cloud, u)[0] for u in ("ana", "chloe")}
    assert all(cloud.instances[i].state == "running" for i in running.values())
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    (hub.workdir / "state" / "hub" / "cls-spend.json").write_text(json.dumps({today: BUDGET}))  # earlier sessions
    for user, lab in running.items():
        hub.wait_stopped(sessions[user], user, timeout=30)
        assert cloud.instances[lab].state == "stopped", "the lab must be stopped, its disk kept"
    assert "class cls spent its budget: stopping lab" in hub.log_path.read_text()
