"""recipes/jupyterlab.py's settings in a real JupyterLab on 127.0.0.1: the lab never phones home unasked. No news
feed and no update check on the server, and the front end's defaults are "never fetch news" (so it never shows
the "get notified about official Jupyter news?" pop-up) and "never check for updates"."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from harness.emulators.sshd import free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_recipe_jupyterlab import rendered  # noqa: E402

pytestmark = pytest.mark.timeout(120)
NOTIFICATION = "@jupyterlab/apputils-extension:notification"


@pytest.fixture()
def lab(tmp_path: Path):
    """JupyterLab whose system config folder (sys.prefix/etc/jupyter on a VM) holds the recipe's two files; its
    proxy is a dead port on loopback, so nothing it might fetch leaves the machine."""
    etc = tmp_path / "etc"
    (etc / "labconfig").mkdir(parents=True)
    (etc / "jupyter_server_config.json").write_text(rendered("culling and password"))
    (etc / "labconfig" / "default_setting_overrides.json").write_text(rendered("no news pop-up"))
    (tmp_path / "root").mkdir()
    port, token = free_port(), "test-token-123"
    env = {**os.environ, "JUPYTER_CONFIG_PATH": str(etc), "JUPYTER_CONFIG_DIR": str(tmp_path / "user"),
           "JUPYTER_DATA_DIR": str(tmp_path / "data"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTER_TOKEN": token}
    # a regression that fetches news or updates hits a dead loopback proxy, never the internet
    dead = "http://127.0.0.1:9"
    env.update({name: dead for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "ALL_PROXY",
                                        "all_proxy")})
    env.update({name: "127.0.0.1,localhost" for name in ("NO_PROXY", "no_proxy")})
    log = (tmp_path / "lab.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
                             "--ServerApp.port_retries=0", f"--ServerApp.root_dir={tmp_path / 'root'}", "--allow-root"],
                            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    session = requests.Session()
    session.headers["Authorization"] = f"token {token}"
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                session.get(url + "/api/status", timeout=2).raise_for_status()
                break
            except requests.RequestException:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise TimeoutError((tmp_path / "lab.log").read_text()[-3000:]) from None
                time.sleep(0.2)
        yield url, session
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_lab_fetches_no_news_and_checks_no_updates(lab) -> None:
    url, session = lab
    schema = session.get(f"{url}/lab/api/settings/{NOTIFICATION}", timeout=10).json()["schema"]["properties"]
    assert schema["fetchNews"]["default"] == "false"  # JupyterLab's own default, "none", asks with a pop-up
    assert schema["checkForUpdates"]["default"] is False
    page = session.get(f"{url}/lab", timeout=10).text
    config = json.loads(page.split('id="jupyter-config-data" type="application/json">', 1)[1].split("</script>")[0])
    assert config["news"] == {"disabled": True}
    # the server's own endpoints answer without going out: no feed URL, the never-check update checker
    assert session.get(f"{url}/lab/api/news", timeout=10).json() == {"news": []}
    assert session.get(f"{url}/lab/api/update", timeout=10).json() == {"notification": None}
