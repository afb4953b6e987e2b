"""The lab image run the way SaladCloud (or `docker run`) runs it: environment variables only, no vmlab on this side.
`podman run` with the SaladCloud names (AWS_S3_BUCKET_FOLDER and the key, JUPYTERLAB_PW) and the image's agent as
the command (`vmlab-agent run --jupyter`): ~/data is restored from the moto server at start, a change is uploaded,
JupyterLab answers 200 to a password login and 403 without one, the readiness path answers, and `podman stop`
with the engine's default grace period (10 s) pushes a file written just before the stop. The secrets reach the
container as `-e NAME` (values in podman's environment), never on a command line."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from harness.emulators.sshd import free_port
from vmlab import lab
from vmlab.providers.container.provider import ContainerProvider

pytestmark = pytest.mark.container

PASSWORD = "correct horse battery"
SECRET_KEY = "salad-secret-key-value"


def wait_for(check: Any, timeout: float, what: str, why: Any = lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {why()}"
        time.sleep(0.3)


def logs(provider: ContainerProvider, name: str) -> str:
    proc = provider.engine.call("logs", name)
    return (proc.stdout + proc.stderr).decode(errors="replace")


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=3).status_code == 200
    except requests.RequestException:
        return False


def test_the_image_runs_from_salad_variables_alone(provider: ContainerProvider, lab_image: str,
                                                   moto_server: Any) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_server.endpoint)
    s3.create_bucket(Bucket="salad")
    s3.put_object(Bucket="salad", Key="alice/data/restored.txt", Body=b"from the bucket\n")
    port, moto_port = free_port(), moto_server.endpoint.rsplit(":", 1)[1]
    secrets = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "JUPYTERLAB_PW": PASSWORD}
    name = "salad-ctr"
    provider.engine.text(
        "run", "-d", "--pull", "never", "--name", name, "--network", "slirp4netns:allow_host_loopback=true",
        "-p", f"127.0.0.1:{port}:8000", "-e", "AWS_S3_BUCKET_FOLDER=salad/alice/data", "-e", "AWS_REGION=us-east-1",
        "-e", f"AWS_ENDPOINT_URL=http://10.0.2.2:{moto_port}", *(w for key in secrets for w in ("-e", key)),
        "--entrypoint", f"{lab.AGENT_VENV}/bin/vmlab-agent", lab_image,
        "run", "--jupyter", "--ip", "0.0.0.0", "--port", "8000", env=secrets, what="podman run")
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: answers(base + "/api"), 90, "the readiness path",  # /api: 200 without credentials
             lambda: logs(provider, name)[-3000:])
    inspect = provider.engine.json("inspect", name)[0]
    assert SECRET_KEY not in " ".join(inspect["Config"]["Cmd"] or []) and PASSWORD not in str(inspect["Args"])

    def run(script: str) -> str:
        return provider.engine.text("exec", name, "sh", "-c", script, what="podman exec")

    assert run("cat /root/data/restored.txt") == "from the bucket\n"
    assert requests.get(base + "/api/status", timeout=5).status_code == 403
    with requests.Session() as browser:
        browser.get(base + "/login", timeout=5)
        login = browser.post(base + "/login", data={"password": PASSWORD, "_xsrf": browser.cookies.get("_xsrf", "")},
                             allow_redirects=False, timeout=10)
        assert login.status_code == 302, login.text[:300]
        assert browser.get(base + "/api/status", timeout=5).status_code == 200
    with requests.Session() as stranger:
        stranger.get(base + "/login", timeout=5)
        wrong = stranger.post(base + "/login", data={"password": "guess", "_xsrf": stranger.cookies.get("_xsrf", "")},
                              allow_redirects=False, timeout=10)
        assert wrong.status_code != 302 and stranger.get(base + "/api/status", timeout=5).status_code == 403

    def keys() -> set[str]:
        return {o["Key"] for o in s3.list_objects_v2(Bucket="salad", Prefix="alice/data/").get("Contents", [])}

    run("echo written in the lab > /root/data/new.txt")
    wait_for(lambda: "alice/data/new.txt" in keys(), 20, "the change to reach the bucket")
    run("echo the last words > /root/data/last.txt")
    started = time.monotonic()
    provider.engine.text("stop", name, what="podman stop")  # the engine's default grace period: 10 s
    took = time.monotonic() - started
    state = provider.engine.json("inspect", name)[0]["State"]
    assert took < 10 and state["ExitCode"] != 137, (took, state)  # not killed at the end of the grace period
    assert s3.get_object(Bucket="salad", Key="alice/data/last.txt")["Body"].read() == b"the last words\n"
    text = logs(provider, name)
    assert "restore" in text and SECRET_KEY not in text and PASSWORD not in text, text[-2000:]
