"""A real JupyterHub (with configurable-http-proxy from .tools/) on 127.0.0.1, started from a given config file.

The config a recipe renders is used as it is; only what must differ on a test machine is appended after it
(ports, the database and cookie-secret paths under the work folder, no services). Example::

    hub = Hub(tmp_path, rendered_config_text)       # started; .url
    hub.signup("ana", "pw")                         # HTTP status of the sign-up form's POST
    assert hub.login("ana", "pw")                   # True when the hub lets the user in
    s = hub.session("ana", "pw"); hub.spawn(s, "ana")   # a logged-in browser; start its server, wait
    hub.stop()

`Hub(tmp_path, config, ports=hub.ports)` starts a hub again on the ports of a stopped one (`restart()` does it in
place). `services=True` keeps the config's services (the idle culler) and roles; `env` adds variables to the
hub's environment (DOCKER_HOST for DockerSpawner).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness.emulators.sshd import free_port
from harness.plumbing.serverproc import stop_process, wait_until_up

CHP = Path(__file__).resolve().parents[2] / ".tools" / "node_modules" / ".bin" / "configurable-http-proxy"
XSRF = re.compile(r'name="_xsrf" value="([^"]+)"')


def dummy_login(password: str, users: Iterable[str], admins: Iterable[str] = ("prof",)) -> str:
    """Config lines of a test hub: a start request answers at once (202), DummyAuthenticator with one password for
    `users`, `admins` its admins."""
    return ("c.JupyterHub.tornado_settings = {'slow_spawn_timeout': 0}\n"
            'c.JupyterHub.authenticator_class = "dummy"\n'
            f"c.DummyAuthenticator.password = {password!r}\n"
            f"c.Authenticator.allowed_users = {sorted(users)!r}\n"
            f"c.Authenticator.admin_users = {sorted(admins)!r}\n")


class Hub:
    def __init__(self, workdir: Path, config: str, timeout: float = 40.0, *, services: bool = False,
                 env: dict[str, str] | None = None, ports: dict[str, int] | None = None) -> None:
        if not CHP.exists():
            raise RuntimeError(f"{CHP} is missing: run `bash -c '. scripts/deps.sh; vmlab_test_tools'`")
        self.workdir = workdir
        self.database = workdir / "jupyterhub.sqlite"
        # a restart (same workdir: same database and cookie secret) passes the first hub's `ports`
        port, api, hub_port = (ports["proxy"], ports["proxy_api"], ports["hub"]) if ports else (
            free_port(), free_port(), free_port())
        self.url = f"http://127.0.0.1:{port}"
        path = workdir / "jupyterhub_config.py"
        path.write_text(config + f"""
# ---- test machine only: ports and paths; nothing about who may log in ----
c.JupyterHub.bind_url = "http://127.0.0.1:{port}"
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{api}"
c.ConfigurableHTTPProxy.command = [{str(CHP)!r}]
c.JupyterHub.cookie_secret_file = {str(workdir / "cookie_secret")!r}
c.JupyterHub.db_url = {"sqlite:///" + str(self.database)!r}
""" + ("" if services else "c.JupyterHub.services = []\nc.JupyterHub.load_roles = []\n"))
        self.ports = {"proxy": port, "proxy_api": api, "hub": hub_port}
        self.env = {**os.environ, **(env or {})}
        self.config_path = path
        self.log_path = workdir / "hub.log"
        self.log_path.write_text("")
        self._start(timeout)

    def _start(self, timeout: float) -> None:
        with self.log_path.open("a") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", str(self.config_path)],
                                         cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True, env=self.env)
        if not wait_until_up(self.proc, self._routed, timeout, interval=0.2):
            self.stop()
            raise TimeoutError(f"JupyterHub did not start:\n{self.log_path.read_text()[-3000:]}")

    def restart(self, timeout: float = 60.0) -> None:
        """Stop the hub and its proxy and start them again on the same ports, database and cookie secret (the
        log goes on in the same file): what a hub upgrade or a reboot of its machine does."""
        self.stop()
        self._start(timeout)

    def _routed(self) -> bool:
        """The hub answers through the proxy (before the hub adds its route, the proxy itself answers 404)."""
        import requests

        try:
            return requests.get(self.url + "/hub/api/", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def _form(self, page: str, fields: dict[str, str]) -> int:
        import requests

        with requests.Session() as s:
            return self._post_form(s, page, fields)

    def _post_form(self, s: Any, page: str, fields: dict[str, str]) -> int:
        got = s.get(self.url + page, timeout=10)
        found = XSRF.search(got.text)
        data = {**fields, "_xsrf": found.group(1) if found else s.cookies.get("_xsrf", "")}
        return int(s.post(self.url + page, data=data, allow_redirects=False, timeout=30).status_code)

    def session(self, user: str, password: str) -> Any:
        """A requests.Session logged in as `user` (a browser's cookies), its `X-XSRFToken` header set for the hub's
        API; `api()` calls the hub's REST API with them. PermissionError when the login is refused."""
        import requests

        s = requests.Session()
        if self._post_form(s, "/hub/login", {"username": user, "password": password}) != 302:
            s.close()
            raise PermissionError(f"the hub refused {user}'s login")
        s.headers["X-XSRFToken"] = s.cookies.get("_xsrf", "")
        return s

    def api(self, s: Any, method: str, path: str) -> Any:
        """`method` on /hub/api/`path` with a session's cookies (and the XSRF header cookie requests need)."""
        # the hub's own: each single-user server the session opened sets another under /user/NAME/
        xsrf = next((c.value for c in s.cookies if c.name == "_xsrf" and c.path.startswith("/hub")), "")
        return s.request(method, f"{self.url}/hub/api/{path}", timeout=30, headers={"X-XSRFToken": xsrf})

    def signup(self, user: str, password: str) -> int:
        """POST NativeAuthenticator's sign-up form; returns the HTTP status (404: there is no sign-up)."""
        return self._form("/hub/signup", {"username": user, "signup_password": password,
                                          "signup_password_confirmation": password})

    def login(self, user: str, password: str) -> bool:
        """Whether the login form lets `user` in (a redirect away from the login page)."""
        return self._form("/hub/login", {"username": user, "password": password}) == 302

    def server(self, s: Any, user: str) -> dict[str, Any]:
        """`user`'s default server as the hub's REST API shows it ({} when there is none)."""
        answer = self.api(s, "GET", f"users/{user}")
        if answer.status_code != 200:
            raise RuntimeError(f"GET users/{user}: HTTP {answer.status_code} {answer.text[:300]}")
        return dict(answer.json().get("servers", {}).get("", {}))

    def spawn(self, s: Any, user: str, timeout: float = 120.0) -> dict[str, Any]:
        """Ask for `user`'s server and wait until the hub says it is ready or stopped trying (a failed start
        leaves no server: {}). Returns the server's model."""
        started = self.api(s, "POST", f"users/{user}/server")
        if started.status_code not in (201, 202, 400, 500):  # 400: already running or pending; 500: it failed
            raise RuntimeError(f"POST users/{user}/server: HTTP {started.status_code} {started.text[:300]}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            server = self.server(s, user)
            if not server or server.get("ready") or server.get("pending") is None:
                return server
            time.sleep(0.3)
        raise TimeoutError(f"{user}'s server neither started nor failed in {timeout:.0f} s")

    def wait_stopped(self, s: Any, user: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.server(s, user):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{user}'s server did not stop in {timeout:.0f} s")
            time.sleep(0.3)

    def stop(self) -> None:
        stop_process(self.proc)
        # the proxy runs in the hub's process group; a hub killed hard may leave it behind
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
