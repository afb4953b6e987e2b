"""podman's Docker-compatible API (`podman system service`) on a unix socket the test owns, over the same
engine root (and so the same image storage) as vmlab's container provider: what DockerSpawner talks to in tests.

No TCP port is opened (a socket file under the work folder), no network is made. Example::

    api = PodmanAPI(Podman(root), tmp_path)     # started; api.url is "unix:///.../podman.sock"
    docker.DockerClient(base_url=api.url).ping()
    api.stop()
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from harness.plumbing.serverproc import stop_process, wait_until_up
from vmlab.providers.container.engine import Podman


class PodmanAPI:
    def __init__(self, engine: Podman, workdir: Path, timeout: float = 30.0) -> None:
        engine.check()  # writes vmlab's podman settings under the engine root
        self.socket = workdir / "podman.sock"
        self.url = f"unix://{self.socket}"
        self.log_path = workdir / "podman-service.log"
        with self.log_path.open("w") as log:
            # --time 0: serve until stopped (podman's default ends the service after 5 s without a request)
            self.proc = subprocess.Popen(["podman", "system", "service", "--time", "0", self.url], env=engine.env(),
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        if not wait_until_up(self.proc, self._answers, timeout, interval=0.1):
            self.stop()
            raise TimeoutError(f"podman system service did not start:\n{self.log_path.read_text()[-2000:]}")

    def _answers(self) -> bool:
        import docker

        if not self.socket.exists():
            return False
        try:
            return bool(docker.DockerClient(base_url=self.url, timeout=2).ping())
        except docker.errors.DockerException:
            return False

    def stop(self) -> None:
        stop_process(self.proc)
        self.socket.unlink(missing_ok=True)

