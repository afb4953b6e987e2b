"""Benchmark: a JupyterHub spawn with `vmlab.hub.LabSpawner` on the container provider, from the start request to
the user's JupyterLab answering through the hub's proxy.

    .venv/bin/python bench/hub_spawn.py                       # 3 users one after another, a restart, 10 at once
    .venv/bin/python bench/hub_spawn.py --serial 2 --concurrent 4

Needs root, podman (with runc and slirp4netns), configurable-http-proxy in .tools/ (`scripts/deps.sh`) and the
class image tests/container makes: the lab image plus jupyterhub-singleuser, kept in the shared test cache
(`/var/tmp/vmlab-test-cache/container/hub-lab-image-*.tar`; run
`.venv/bin/python -m pytest -m container tests/container/test_hub_labspawner_container.py` once to make it).
Everything runs on 127.0.0.1 in a podman engine root of its own under a temporary folder, removed at the end
(containers, volumes, images). No sync (no bucket): the time is the hub's, the container's and the server's.

- serial: `--serial` users start one after another; each time is the hub API's POST to `/user/NAME/api/status`
  answering 200 through the proxy with the user's token.
- restart: the first user's server is stopped, then started again (a new container on the kept data volume).
- concurrent: `--concurrent` other users press start at once; every server must answer (a failure is counted and
  makes the exit code 1); per-user times and the wall time until all answer.
- qemu (`--qemu-image ID`): one user's lab VM on the local provider (QEMU) from a class image baked with
  jupyterhub-singleuser, e.g. `vmlab bake tests/e2e/recipes/e2e_lab.py` (the e2e recipe sets `hub_singleuser`)
  with VMLAB_CACHE_DIR=/var/tmp/vmlab-test-cache: the same start-to-answer time, then the user is deleted
  (the VM with it).
Results are printed and written to bench/results/hub_spawn.json. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from harness.emulators.jupyterhub import Hub  # noqa: E402
from vmlab.providers.container.engine import Podman  # noqa: E402
from vmlab.providers.container.provider import ContainerProvider  # noqa: E402

RESULTS = REPO / "bench" / "results" / "hub_spawn.json"
CACHE = Path(os.environ.get("VMLAB_TEST_CACHE", "/var/tmp/vmlab-test-cache")) / "container"
PASSWORD = "bench password"

CONFIG = """
import os
os.environ["VMLAB_STATE_DIR"] = {state!r}
c.JupyterHub.spawner_class = "vmlab.hub.LabSpawner"
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = {password!r}
c.Authenticator.allowed_users = {users!r}
c.LabSpawner.provider_name = "container"
c.LabSpawner.class_name = "bench"
c.LabSpawner.image = {image!r}
c.LabSpawner.start_timeout = 300
"""


def load_image(engine: Podman) -> str:
    archives = sorted(CACHE.glob("hub-lab-image-*.tar"), key=lambda p: p.stat().st_mtime)
    if not archives:
        sys.exit(f"no class image in {CACHE}: run the container hub tests once (see this script's docstring)")
    engine.text("load", "-q", "-i", str(archives[-1]), what="loading the class image")
    found = ContainerProvider(engine.root).list_images({"vmlab:recipe": "ctr-hub-lab"})
    if not found:
        sys.exit(f"{archives[-1]} holds no ctr-hub-lab image")
    return found[0].id


class Student:
    def __init__(self, hub: Hub, name: str) -> None:
        self.hub, self.name = hub, name
        self.session = hub.session(name, PASSWORD)
        made = self.session.post(f"{hub.url}/hub/api/users/{name}/tokens", json={"note": "bench"}, timeout=60)
        made.raise_for_status()
        self.auth = {"Authorization": f"token {made.json()['token']}"}

    def start(self, timeout: float = 300.0) -> float:
        """Seconds from the start request to JupyterLab's API answering 200 through the proxy."""
        import requests

        started = time.monotonic()
        asked = requests.post(f"{self.hub.url}/hub/api/users/{self.name}/server", headers=self.auth, timeout=60)
        if asked.status_code not in (201, 202):
            raise RuntimeError(f"{self.name}: start refused: HTTP {asked.status_code} {asked.text[:200]}")
        while time.monotonic() - started < timeout:
            got = requests.get(f"{self.hub.url}/user/{self.name}/api/status", headers=self.auth,
                               allow_redirects=False, timeout=30)
            if got.status_code == 200:
                return time.monotonic() - started
            time.sleep(0.2)
        raise TimeoutError(f"{self.name}'s server did not answer in {timeout:.0f} s")

    def stop(self) -> None:
        self.hub.api(self.session, "DELETE", f"users/{self.name}/server")
        self.hub.wait_stopped(self.session, self.name, timeout=120)


QEMU_CONFIG = """
import os
os.environ["VMLAB_STATE_DIR"] = {state!r}
c.JupyterHub.spawner_class = "vmlab.hub.LabSpawner"
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = {password!r}
c.Authenticator.allowed_users = {{"vm1", "prof"}}
c.Authenticator.admin_users = {{"prof"}}
c.LabSpawner.provider_name = "local"
c.LabSpawner.class_name = "benchvm"
c.LabSpawner.image = {image!r}
"""


def qemu_round(image: str, work: Path) -> dict[str, Any]:
    """One user's lab VM (local provider) from `image`: start to answering, stop, start again; then the user is
    deleted, which removes the VM."""
    work.mkdir()
    hub = Hub(work, QEMU_CONFIG.format(state=str(work / "state"), password=PASSWORD, image=image),
              env={"PYTHONPATH": str(REPO)})
    try:
        student, prof = Student(hub, "vm1"), hub.session("prof", PASSWORD)
        try:
            first = round(student.start(timeout=900), 2)
            print(f"QEMU lab spawn: {first} s", flush=True)
            student.stop()
            again = round(student.start(timeout=900), 2)
            print(f"QEMU lab stopped and started again: {again} s", flush=True)
        finally:
            hub.api(prof, "DELETE", "users/vm1")  # its lab VM goes with the user
        return {"qemu_spawn_s": first, "qemu_restart_s": again}
    finally:
        hub.stop()


def attempt(student: Student) -> float | str:
    try:
        return round(student.start(), 2)
    except Exception as e:  # noqa: BLE001 - counted and reported, the others go on
        return f"failed: {e}"


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    root = work / "podman"
    engine = Podman(root)
    image = load_image(engine)
    serial = [f"s{i}" for i in range(1, args.serial + 1)]
    together = [f"c{i:02d}" for i in range(1, args.concurrent + 1)]
    config = CONFIG.format(state=str(work / "state"), password=PASSWORD, users={*serial, *together}, image=image)
    hub = Hub(work, config, env={"VMLAB_CONTAINER_ROOT": str(root), "PYTHONPATH": str(REPO)})
    try:
        first = [Student(hub, name) for name in serial]
        times = {s.name: round(s.start(), 2) for s in first}
        print(f"serial spawns (s): {times}", flush=True)
        first[0].stop()
        restart = round(first[0].start(), 2)
        print(f"{first[0].name} stopped and started again: {restart} s", flush=True)
        for s in first:
            s.stop()  # the concurrent round has the machine to itself
        others = [Student(hub, name) for name in together]
        began = time.monotonic()
        with ThreadPoolExecutor(len(others)) as pool:
            results = dict(zip(together, pool.map(attempt, others), strict=True))
        wall = round(time.monotonic() - began, 2)
        ok = [t for t in results.values() if isinstance(t, float)]
        print(f"{len(others)} spawns at once: {len(ok)} answered, all after {wall} s; each {results}", flush=True)
        return {"serial_s": times, "serial_median_s": round(statistics.median(times.values()), 2),
                "restart_s": restart, "concurrent": len(others), "concurrent_ok": len(ok),
                "concurrent_s": results, "concurrent_median_s": round(statistics.median(ok), 2) if ok else None,
                "concurrent_wall_s": wall, "failures": len(others) - len(ok)}
    finally:
        hub.stop()
        engine.call("rm", "-a", "-f", "-v", "-t", "0")
        engine.call("system", "reset", "-f")
        shutil.rmtree(engine.run_dir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serial", type=int, default=3, help="users started one after another (default 3)")
    parser.add_argument("--concurrent", type=int, default=10, help="users started at once (default 10)")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/hub_spawn.json")
    parser.add_argument("--qemu-image", help="also one lab VM (local provider) from this class image id")
    args = parser.parse_args()
    if os.geteuid() != 0 or shutil.which("podman") is None:
        sys.exit("needs root and podman (the container provider's engine)")
    with tempfile.TemporaryDirectory(prefix="vmlab-bench-hub-") as tmp:
        result = run(args, Path(tmp))
        if args.qemu_image:
            result.update(qemu_round(args.qemu_image, Path(tmp) / "qemu"))
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    result.update({"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "loadavg": load},
                   "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    print(json.dumps(result, indent=2))
    if not args.no_save:
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
