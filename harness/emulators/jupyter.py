"""A real jupyter-server on 127.0.0.1 with a token, for tests that read Jupyter's REST API (the idle watcher).

Example::

    server = JupyterServer(tmp_path)      # started; .url, .token, .env_file (JUPYTER_TOKEN=...)
    kernel = server.post("/api/kernels")["id"]
    server.execute(kernel, "import time; time.sleep(5)")   # returns once the kernel reports busy
    server.stop()
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from harness.emulators.sshd import free_port
from harness.plumbing.serverproc import stop_process


class JupyterServer:
    def __init__(self, workdir: Path, timeout: float = 60.0) -> None:
        self.token = secrets.token_urlsafe(24)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env_file = workdir / "jupyter.env"
        self.env_file.write_text(f"JUPYTER_TOKEN={self.token}\n")
        root = workdir / "notebooks"
        root.mkdir(exist_ok=True)
        env = {**os.environ, "JUPYTER_CONFIG_DIR": str(workdir / "config"), "JUPYTER_DATA_DIR": str(workdir / "jd"),
               "JUPYTER_RUNTIME_DIR": str(workdir / "runtime"), "JUPYTER_PLATFORM_DIRS": "1"}
        self.log_path = workdir / "jupyter.log"
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jupyter_server", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}",
                 "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}", "--no-browser",
                 f"--ServerApp.root_dir={root}", "--allow-root"],  # CI runs as root
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.get("/api/status")
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"jupyter-server did not start:\n{self.log_path.read_text()}") from None
                time.sleep(0.2)

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            text = answer.read()
        return json.loads(text) if text else None

    def get(self, path: str) -> Any:
        return self._call("GET", path)

    def post(self, path: str, body: Any = None) -> Any:
        return self._call("POST", path, body if body is not None else {})

    def delete(self, path: str) -> None:
        self._call("DELETE", path)

    def execute(self, kernel_id: str, code: str, timeout: float = 30.0) -> None:
        """Send `code` to the kernel over its websocket (as JupyterLab does) and return once it reports busy."""
        import websocket

        ws = websocket.create_connection(f"ws://127.0.0.1:{self.port}/api/kernels/{kernel_id}/channels",
                                         header=[f"Authorization: token {self.token}"], timeout=timeout)
        try:
            msg_id = uuid.uuid4().hex
            ws.send(json.dumps({
                "header": {"msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex,
                           "msg_type": "execute_request", "version": "5.3"},
                "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                            "allow_stdin": False, "stop_on_error": True},
            }))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                kernel = self.get(f"/api/kernels/{kernel_id}")
                if kernel["execution_state"] == "busy":
                    return
                time.sleep(0.05)
            raise TimeoutError(f"kernel {kernel_id} never became busy")
        finally:
            ws.close()

    def stop(self) -> None:
        stop_process(self.proc)
