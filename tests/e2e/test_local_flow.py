"""The whole flow on real QEMU VMs, through the real CLI: bake (with a verify run), up, tunnel, resume, down, and
a JupyterHub student's lab.

VM boots are slow under TCG (~40 s each, plus ~3 min for the bake's uv installs), so the module shares one bake
and one lab across its tests and boots seven VMs in all. Every test checks what it created and what it must not
leave behind; the module's finaliser removes whatever a failed test left.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

pytestmark = [pytest.mark.vm, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
E2E_RECIPES = Path(__file__).resolve().parent / "recipes"


@dataclass
class Flow:
    """Runs `vmlab` as a user would, with this module's own state dir and the shared VM cache."""

    env: dict[str, str]
    state: Path
    cache: Path
    lab: str
    image: str = ""
    bake: dict = field(default_factory=dict)
    vms_before_bake: set[str] = field(default_factory=set)

    def run(self, *args: str, timeout: float = 1200, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "vmlab", *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            pytest.fail(f"vmlab {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "vmlab", *args], env=self.env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def ssh(self, script: str) -> str:
        """Run a shell script on the lab VM (as admin, with the lab's key and pinned host key)."""
        return self.run("ssh", self.lab, "--", script, timeout=120).stdout

    def vm_dirs(self) -> set[str]:
        vms = self.cache / "local" / "vms"
        return {p.name for p in vms.iterdir()} if vms.is_dir() else set()

    def image_dirs(self) -> set[str]:
        images = self.cache / "local" / "images"
        return {p.name for p in images.iterdir() if p.name.startswith("limg-")} if images.is_dir() else set()

    def secrets_on_disk(self) -> list[Path]:
        """Keys and records vmlab keeps in its state dir (temporary builder keys included)."""
        return sorted(p for p in self.state.rglob("*")
                      if p.is_file() and not p.name.startswith(".") and p.suffix != ".lock")

    def record(self) -> dict:
        return json.loads((self.state / "labs" / f"{self.lab}.json").read_text())


@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flow]:
    if os.geteuid() != 0:
        pytest.skip("building the local base image needs root (debootstrap)")
    from tests.e2e.conftest import SHARED_CACHE

    state = tmp_path_factory.mktemp("e2e-state")
    env = {**os.environ, "VMLAB_STATE_DIR": str(state), "VMLAB_CACHE_DIR": str(SHARED_CACHE),
           "VMLAB_PROVIDER": "local", "PYTHONUNBUFFERED": "1", "NO_COLOR": "1",
           # the e2e recipe includes recipes/lab.py by import, as a user's recipe next to it would
           "PYTHONPATH": os.pathsep.join([str(ROOT / "recipes"), str(ROOT)])}
    f = Flow(env=env, state=state, cache=SHARED_CACHE, lab="e2e-" + secrets.token_hex(3))
    vms_before, images_before = f.vm_dirs(), f.image_dirs()
    f.run("local", "init", timeout=1500)  # the base image: built once per cache (~2 min), then reused
    try:
        yield f
    finally:
        from vmlab.providers.local.provider import LocalProvider

        provider = LocalProvider(SHARED_CACHE / "local")
        for vm in f.vm_dirs() - vms_before:
            provider.terminate(vm)
        for image in f.image_dirs() - images_before:
            provider.images.delete(image, [])


@pytest.fixture(scope="module")
def baked(flow: Flow) -> Flow:
    flow.vms_before_bake = flow.vm_dirs()
    t0 = time.monotonic()
    proc = flow.run("bake", str(E2E_RECIPES / "e2e_lab.py"), "--force", "--verify", "--json", timeout=2400)
    flow.bake = json.loads(proc.stdout)
    flow.bake["wall_seconds"] = round(time.monotonic() - t0, 1)
    flow.image = flow.bake["image"]
    print(f"\nbake: {json.dumps(flow.bake['timings'])}, wall {flow.bake['wall_seconds']} s")
    return flow


@pytest.fixture(scope="module")
def lab(baked: Flow) -> Flow:
    t0 = time.monotonic()
    up = json.loads(baked.run("up", baked.lab, "--image", baked.image, "--json", timeout=900).stdout)
    assert up["resumed"] is False and up["lab"]["name"] == baked.lab and "token" not in up["lab"]
    print(f"\nup: {up['timings']}, wall {time.monotonic() - t0:.1f} s")
    return baked


def http_status(url: str, token: str | None = None) -> int:
    headers = {"Authorization": f"token {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


class Tunnel:
    """`vmlab tunnel LAB --json` running in the background, as a user leaves it open."""

    def __init__(self, flow: Flow) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.proc = flow.popen("tunnel", flow.lab, "--port", str(port), "--json")
        lines = []
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            lines.append(line)
            if line.rstrip() == "}":
                break
        if not lines or lines[-1].rstrip() != "}":
            self.close()
            pytest.fail(f"vmlab tunnel printed no URL: {''.join(lines)} {self.proc.stderr.read()}")  # type: ignore
        self.info = json.loads("".join(lines))
        self.base = f"http://127.0.0.1:{self.info['local_port']}"

    def close(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def check_tunnel(flow: Flow) -> str:
    """Through a real tunnel: the lab's URL works with its token, the API refuses no or a wrong token."""
    token = flow.record()["token"]
    tunnel = Tunnel(flow)
    try:
        assert tunnel.info["url"].endswith(f"/lab?token={token}")
        assert http_status(tunnel.base + "/api/status", token) == 200
        assert http_status(tunnel.info["url"].replace("localhost", "127.0.0.1")) == 200
        assert http_status(tunnel.base + "/api/status") == 403
        assert http_status(tunnel.base + "/api/status", "wrong" + token) == 403
    finally:
        tunnel.close()
    return token


def test_failing_bake_removes_builder_and_key(flow: Flow) -> None:
    vms, images = flow.vm_dirs(), flow.image_dirs()
    proc = flow.run("bake", str(E2E_RECIPES / "fails.py"), "--force", timeout=900, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "exit 3" in proc.stderr or "exit 3" in proc.stdout
    assert "removed builder" in proc.stdout
    assert flow.vm_dirs() == vms
    assert flow.image_dirs() == images
    assert flow.secrets_on_disk() == []


def test_secret_left_on_the_builder_fails_the_bake_without_an_image(flow: Flow) -> None:
    vms, images = flow.vm_dirs(), flow.image_dirs()
    proc = flow.run("bake", str(E2E_RECIPES / "plants_secret.py"), "--force", timeout=900, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    error = proc.stderr.strip().splitlines()[-1]
    assert "secrets found on the builder, no image made" in error
    assert "/opt/app/settings.ini (AWS access key id)" in error and "/srv/deploy/id_ed25519 (private key)" in error
    assert flow.vm_dirs() == vms
    assert flow.image_dirs() == images
    assert flow.secrets_on_disk() == []


def test_bake_verifies_idempotence_and_cleans_up(baked: Flow) -> None:
    first, second = baked.bake["runs"]
    assert first["changed"] > 0 and first["failed"] == 0
    assert second["changed"] == 0 and second["failed"] == 0, second
    assert baked.bake["reused"] is False
    assert baked.image in baked.image_dirs()
    assert baked.vm_dirs() == baked.vms_before_bake  # the builder is gone
    assert baked.secrets_on_disk() == []  # the builder's temporary key is gone
    images = json.loads(baked.run("images", "ls", "--json").stdout)["images"]
    mine = next(i for i in images if i["id"] == baked.image)
    assert mine["tags"]["vmlab:recipe"] == "e2e-lab"
    assert mine["tags"]["vmlab:recipe-hash"] == baked.bake["recipe_hash"]


def test_second_bake_reuses_the_image(baked: Flow) -> None:
    vms = baked.vm_dirs()
    proc = baked.run("bake", str(E2E_RECIPES / "e2e_lab.py"), "--json", timeout=120)
    again = json.loads(proc.stdout)
    assert again["reused"] is True and again["image"] == baked.image
    assert baked.vm_dirs() == vms  # no builder was launched


HUB_CONFIG = """
import os
os.environ["VMLAB_STATE_DIR"] = {state!r}
c.JupyterHub.spawner_class = "vmlab.hub.spawner.LabSpawner"
{login}
c.LabSpawner.provider_name = "local"
c.LabSpawner.class_name = "e2ehub"
c.LabSpawner.image = {image!r}
"""


def test_a_hub_gives_a_student_a_lab_vm_stops_it_and_removes_it_with_the_user(baked: Flow, tmp_path: Path) -> None:
    """Issue 16 end to end on the local provider: JupyterHub's LabSpawner boots the student's lab VM from the
    class image (jupyterhub-singleuser baked in by `hub_singleuser`), its server answers through the hub's proxy
    over the spawner's SSH tunnel, stop keeps the VM's disk, deleting the user removes the VM."""
    from harness.emulators.jupyterhub import Hub, dummy_login

    password = secrets.token_urlsafe(12)
    vms = baked.vm_dirs()
    hub = Hub(tmp_path, HUB_CONFIG.format(state=str(baked.state), image=baked.image,
                                          login=dummy_login(password, ["stu", "eve", "prof"])),
              # not the flow's PYTHONPATH: recipes/jupyterhub.py would stand in for the jupyterhub package
              env={"VMLAB_STATE_DIR": str(baked.state), "VMLAB_CACHE_DIR": str(baked.cache), "PYTHONPATH": str(ROOT)})
    try:
        student, prof, eve = (hub.session(user, password) for user in ("stu", "prof", "eve"))
        token = {user: s.post(f"{hub.url}/hub/api/users/{user}/tokens", json={"note": "e2e"}, timeout=30).json()
                 ["token"] for user, s in (("stu", student), ("eve", eve))}
        server = hub.url + "/user/stu/api"

        def call(method: str, path: str, as_user: str = "stu", **kw: object) -> int:
            got = requests.request(method, server + path, headers={"Authorization": f"token {token[as_user]}"},
                                   allow_redirects=False, timeout=60, **kw)  # type: ignore[arg-type]
            return got.status_code

        t0 = time.monotonic()
        assert hub.spawn(student, "stu", timeout=900).get("ready"), hub.log_path.read_text()[-3000:]
        print(f"\nhub spawn of a QEMU lab to its server answering: {time.monotonic() - t0:.1f} s")
        assert call("GET", "/status") == 200
        assert call("PUT", "/contents/from-the-hub.txt",
                    json={"type": "file", "format": "text", "content": "hello"}) in (200, 201)
        assert call("GET", "/status", as_user="eve") == 403
        on_vm = baked.run("ssh", "e2ehub-stu", "--", "sudo find /home -name from-the-hub.txt -exec cat {} +",
                          timeout=120).stdout
        assert on_vm.strip() == "hello"  # on the lab VM's disk, not on the hub's machine
        (new_vm,) = baked.vm_dirs() - vms
        assert hub.api(student, "DELETE", "users/stu/server").status_code in (202, 204)
        hub.wait_stopped(student, "stu", timeout=300)
        labs = {row["name"]: row for row in json.loads(baked.run("ls", "--json").stdout)["labs"]}
        assert labs["e2ehub-stu"]["state"] == "stopped" and new_vm in baked.vm_dirs()
        assert hub.api(prof, "DELETE", "users/stu").status_code == 204
        assert baked.vm_dirs() == vms and "e2ehub-stu" not in baked.run("ls").stdout
    finally:
        hub.stop()


def test_lab_serves_jupyter_through_the_tunnel_only_with_its_token(lab: Flow) -> None:
    check_tunnel(lab)
    listening = lab.ssh("ss -Hltn 'sport = :8888'")
    assert "127.0.0.1:8888" in listening and "0.0.0.0:8888" not in listening and "*:8888" not in listening


def test_lab_has_the_recipe_and_no_builder_secrets(lab: Flow) -> None:
    out = lab.ssh(
        "cat /etc/vmlab-e2e-marker; command -v tree; id -nG student; systemctl is-enabled vmlab-e2e.timer; "
        "echo keys=$(wc -l < ~/.ssh/authorized_keys); sudo ls /var/lib/cloud/instances; "
        "sudo ls /etc/ssh | grep -c '^ssh_host_.*_key$'; "
        "sudo sh -c 'ls /root/.bash_history /home/*/.bash_history 2>/dev/null | wc -l'")
    lines = out.splitlines()
    assert lines[0] == "baked by the e2e test"
    assert lines[1] == "/usr/bin/tree"
    assert "users" in lines[2].split()
    assert lines[3] == "enabled"
    assert lines[4] == "keys=1"  # only the lab's own key, not the builder's
    record = lab.record()
    # only this VM's cloud-init state: the builder's (its seed held the builder's host key) was scrubbed
    assert lines[5].startswith(f"iid-{record['instance_id']}-")
    assert lines[6] == "1"  # exactly the host key vmlab pinned for this lab
    assert lines[7] == "0"
    lab_pub = Path(record["key_file"] + ".pub").read_text().split()[1]
    assert lab_pub in lab.ssh("cat ~/.ssh/authorized_keys")


def test_resumed_lab_gets_a_fresh_token(lab: Flow) -> None:
    old = lab.record()["token"]
    lab.run("stop", lab.lab, timeout=300)
    assert json.loads(lab.run("ls", "--json").stdout)["labs"][0]["state"] == "stopped"
    lab.run("up", lab.lab, timeout=900)
    new = check_tunnel(lab)
    assert new != old
    tunnel = Tunnel(lab)
    try:
        assert http_status(tunnel.base + "/api/status", old) == 403
    finally:
        tunnel.close()


def test_ctrl_c_during_up_removes_the_half_launched_lab(baked: Flow) -> None:
    vms, files = baked.vm_dirs(), baked.secrets_on_disk()
    name = baked.lab + "-int"
    proc = baked.popen("up", name, "--image", baked.image)
    assert proc.stdout is not None
    for line in proc.stdout:
        if "waiting for SSH" in line:
            break
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert baked.vm_dirs() == vms, out + err
    assert baked.secrets_on_disk() == files
    assert name not in baked.run("ls").stdout


def test_down_removes_vm_key_and_record(lab: Flow) -> None:
    record = lab.record()
    lab.run("down", lab.lab, timeout=300)
    assert record["instance_id"] not in lab.vm_dirs()
    assert not Path(record["key_file"]).exists()
    assert [p for p in lab.secrets_on_disk() if lab.lab in p.name] == []  # record, key, known_hosts
    lab.run("images", "rm", lab.image)
    assert lab.image not in lab.image_dirs()
