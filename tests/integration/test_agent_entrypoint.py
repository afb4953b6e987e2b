"""`vmlab-agent run` driven from outside as a container runtime drives an entrypoint: SaladCloud's variables only,
a moto S3 server (Azurite, fake-gcs-server) on loopback, SIGTERM to stop, and a real JupyterLab."""

from __future__ import annotations

import http.cookiejar
import json
import signal
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.drivers.entrypoint import Entrypoint
from harness.emulators.sshd import free_port

pytestmark = pytest.mark.moto

# CMD: proves the restore ran first, writes a file while running, and on SIGTERM writes one more before exiting 7.
JOB = """
import pathlib, signal, sys, time
data = pathlib.Path(sys.argv[1])
(data / "started.txt").write_text("restored: " + (data / "old.txt").read_text())
def bye(*_):
    time.sleep(0.5)
    (data / "last.txt").write_text("written during the stop")
    sys.exit(7)
signal.signal(signal.SIGTERM, bye)
print("job running", flush=True)
while True:
    time.sleep(0.1)
"""


@pytest.fixture()
def salad_s3(lab: Any, moto_server: Any) -> Iterator[tuple[Path, str, dict[str, str]]]:
    """(data folder, bucket, SaladCloud-style environment) with `old.txt` in the bucket folder."""
    folder, bucket, _, _ = lab
    import boto3

    boto3.client("s3", endpoint_url=moto_server.endpoint).put_object(Bucket=bucket, Key="alice/data/old.txt",
                                                                      Body=b"from the bucket")
    env = {"AWS_S3_BUCKET_FOLDER": f"{bucket}/alice/data", "AWS_ACCESS_KEY_ID": "AKIAVMLABTEST",
           "AWS_SECRET_ACCESS_KEY": f"vmlab-secret-{uuid.uuid4().hex}", "AWS_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": moto_server.endpoint, "AWS_MAX_ATTEMPTS": "2"}
    yield folder, bucket, env


def objects(s3: Any, bucket: str) -> dict[str, bytes]:
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


def wait_for(check: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_salad_s3_variables_restore_sync_and_sigterm_flush(salad_s3: Any, s3: Any, tmp_path: Path) -> None:
    folder, bucket, env = salad_s3
    job = tmp_path / "job.py"
    job.write_text(JOB)
    entry = Entrypoint(tmp_path, env, "--", "python3", str(job), str(folder))
    try:
        entry.wait_log("job running")
        assert (folder / "started.txt").read_text() == "restored: from the bucket"  # restore came first
        wait_for(lambda: objects(s3, bucket).get("alice/data/started.txt") == b"restored: from the bucket")
        secret = env["AWS_SECRET_ACCESS_KEY"]
        assert entry.cmdlines_holding(secret) == []
        code, seconds = entry.terminate()
    finally:
        entry.close()
    assert code == 7, entry.log_text()  # CMD's own exit code
    assert seconds < 10, f"took {seconds:.1f} s: past docker stop's default grace period"
    assert objects(s3, bucket)["alice/data/last.txt"] == b"written during the stop"
    log = entry.log_text()
    assert secret not in log
    assert "is synced with s3://" in log and "(from AWS_S3_BUCKET_FOLDER)" in log
    assert "nothing left to push; exiting with 7" in log


def test_command_exiting_by_itself_is_flushed_and_its_code_returned(salad_s3: Any, s3: Any,
                                                                    tmp_path: Path) -> None:
    folder, bucket, env = salad_s3
    script = f"import pathlib; pathlib.Path({str(folder)!r}, 'result.txt').write_text('done'); raise SystemExit(3)"
    entry = Entrypoint(tmp_path, env, "--", "python3", "-c", script)
    try:
        code = entry.wait()
    finally:
        entry.close()
    assert code == 3
    assert objects(s3, bucket)["alice/data/result.txt"] == b"done"
    assert (folder / "old.txt").read_bytes() == b"from the bucket"


def test_missing_command_is_a_clear_error_and_touches_nothing(salad_s3: Any, s3: Any, tmp_path: Path) -> None:
    folder, bucket, env = salad_s3
    (folder / "local.txt").write_text("not to be uploaded by a failed start")
    before = objects(s3, bucket)
    entry = Entrypoint(tmp_path, env, "--", "no-such-program-vmlab", "--flag")
    try:
        code = entry.wait()
    finally:
        entry.close()
    assert code == 2
    lines = [line for line in entry.log_text().splitlines() if line.strip()]
    assert lines == ["error: command not found: 'no-such-program-vmlab': give an installed program (or its path) "
                     "after `--`"]
    assert objects(s3, bucket) == before  # not even the marker object
    assert sorted(p.name for p in folder.iterdir()) == ["local.txt"]  # nothing restored either


def test_no_sync_variables_just_runs_the_command(tmp_path: Path) -> None:
    entry = Entrypoint(tmp_path, {}, "--", "sh", "-c", "exit 5")
    try:
        code = entry.wait()
    finally:
        entry.close()
    assert code == 5
    assert "no sync variable set" in entry.log_text()


# ---- JupyterLab -----------------------------------------------------------------------------------------------

def _get(url: str, opener: Any = None, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with (opener or urllib.request.build_opener(NoRedirect())).open(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as e:
        return e.code


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any) -> None:
        return None


def _wait_ready(entry: Entrypoint, base: str) -> None:
    deadline = time.monotonic() + 90
    while _ready(base) != 200:
        assert entry.proc.poll() is None and time.monotonic() < deadline, entry.log_text()
        time.sleep(0.2)


def _ready(base: str) -> int:
    try:
        return _get(base + "/api")
    except OSError:
        return 0


def _login(base: str, password: str) -> tuple[Any, int]:
    """(an opener holding the cookies of a password login through jupyter-server's /login form, its status)."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect())
    _get(base + "/login", opener)
    xsrf = next(c.value for c in jar if c.name == "_xsrf")
    body = urllib.parse.urlencode({"password": password, "_xsrf": xsrf}).encode()
    try:
        with opener.open(urllib.request.Request(base + "/login", data=body), timeout=10) as answer:
            return opener, int(answer.status)
    except urllib.error.HTTPError as e:
        return opener, e.code


def test_jupyterlab_with_salad_password_and_a_token(tmp_path: Path) -> None:
    password, token = f"pw-{uuid.uuid4().hex}", uuid.uuid4().hex
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    entry = Entrypoint(tmp_path, {"JUPYTERLAB_PW": password, "JUPYTER_TOKEN": token}, "--jupyter",
                       "--port", str(port))
    try:
        _wait_ready(entry, base)
        assert _get(base + "/api/status") == 403
        assert _get(base + "/lab") == 302  # to the login page
        assert _get(base + "/api/status", headers={"Authorization": f"token {token}"}) == 200
        session, status = _login(base, password)
        assert status == 302 and _get(base + "/api/status", session) == 200
        session, status = _login(base, "wrong")
        assert status == 401 and _get(base + "/api/status", session) == 403
        assert entry.cmdlines_holding(password, token) == []
        config = json.loads((tmp_path / "state/jupyter/jupyter_server_config.json").read_text())
        assert config["PasswordIdentityProvider"]["hashed_password"].startswith("argon2:")
        assert password not in json.dumps(config)
        assert (tmp_path / "state/jupyter/jupyter_server_config.json").stat().st_mode & 0o777 == 0o600
        code, seconds = entry.terminate()
    finally:
        entry.close()
    assert code == 0 and seconds < 10
    log = entry.log_text()
    assert password not in log and token not in log


def test_jupyterlab_without_secrets_gets_a_fresh_token_shown_once(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    entry = Entrypoint(tmp_path, {}, "--jupyter", "--port", str(port), tty=True)
    try:
        _wait_ready(entry, base)
        line = next(line for line in entry.log_text().splitlines() if "shown this once" in line)
        token = line.rsplit("token=", 1)[1].strip()
        assert len(token) >= 32
        assert _get(base + "/api/status") == 403
        assert _get(base + f"/api/status?token={token}") == 200
        assert entry.cmdlines_holding(token) == []
        code, seconds = entry.terminate(signum=signal.SIGINT)  # Ctrl-C of `docker run -it`
    finally:
        entry.close()
    assert code == 0 and seconds < 10  # not asked to confirm: JupyterLab's stdin is no terminal
    assert entry.log_text().count(token) == 1


# ---- Azure (Azurite) and GCS (fake-gcs-server) variables --------------------------------------------------------

def test_salad_azure_variables_sync_and_the_sas_stays_secret(azurite: Any, tmp_path: Path) -> None:
    container = f"vmlab-{uuid.uuid4().hex[:12]}"
    client = azurite.service_client().create_container(container)
    client.upload_blob("old.txt", b"from azure")
    sas = azurite.sas(container)
    folder = tmp_path / "data"
    script = f"import pathlib; pathlib.Path({str(folder)!r}, 'new.txt').write_text('to azure')"
    entry = Entrypoint(tmp_path, {"AZURE_CONTAINER_URL": f"{azurite.endpoint}/{container}",
                                  "AZURE_BLOB_SAS_TOKEN": "?" + sas}, "--", "python3", "-c", script)
    try:
        code = entry.wait()
    finally:
        entry.close()
    assert code == 0
    assert (folder / "old.txt").read_bytes() == b"from azure"
    assert client.download_blob("new.txt").readall() == b"to azure"
    assert sas not in entry.log_text()
    assert "(from AZURE_CONTAINER_URL)" in entry.log_text()


def test_salad_gcs_variables_with_the_key_as_json_text(fake_gcs: Any, tmp_path: Path) -> None:
    bucket = f"vmlab-{uuid.uuid4().hex[:12]}"
    admin = fake_gcs.client().create_bucket(bucket)
    admin.blob("sa1/old.txt").upload_from_string(b"from gcs")
    key = json.dumps({"type": "service_account", "project_id": "vmlab-test",
                      "private_key_id": uuid.uuid4().hex})
    folder = tmp_path / "data"
    script = f"import pathlib; pathlib.Path({str(folder)!r}, 'new.txt').write_text('to gcs')"
    entry = Entrypoint(tmp_path, {"GOOGLE_BUCKET_FOLDER": f"{bucket}/sa1", "GOOGLE_APPLICATION_CREDENTIALS": key,
                                  "GOOGLE_PROJECT_ID": "vmlab-test", "STORAGE_EMULATOR_HOST": fake_gcs.endpoint},
                       "--", "python3", "-c", script)
    try:
        code = entry.wait()
    finally:
        entry.close()
    assert code == 0
    assert (folder / "old.txt").read_bytes() == b"from gcs"
    assert admin.blob("sa1/new.txt").download_as_bytes() == b"to gcs"
    written = tmp_path / "state/google-credentials.json"
    assert json.loads(written.read_text())["type"] == "service_account"
    assert written.stat().st_mode & 0o777 == 0o600
    assert key not in entry.log_text()


def test_a_command_ignoring_sigterm_is_killed_within_the_grace_period(salad_s3: Any, s3: Any,
                                                                      tmp_path: Path) -> None:
    folder, bucket, env = salad_s3
    script = (f"import pathlib, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
              f"pathlib.Path({str(folder)!r}, 'stubborn.txt').write_text('x'); print('job running', flush=True); "
              f"time.sleep(600)")
    entry = Entrypoint(tmp_path, {**env, "VMLAB_GRACE_SECONDS": "4"}, "--", "python3", "-c", script)
    try:
        entry.wait_log("job running")
        pids = entry.tree()
        code, seconds = entry.terminate()
    finally:
        entry.close()
    assert code == 128 + 9
    assert seconds < 4, f"{seconds:.1f} s"
    assert "did not exit within 2.0 s: killing its process group" in entry.log_text()
    assert objects(s3, bucket)["alice/data/stubborn.txt"] == b"x"
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()]  # nothing left running


def test_idle_stop_stops_the_command_and_flushes(salad_s3: Any, s3: Any, tmp_path: Path) -> None:
    folder, bucket, env = salad_s3
    job = tmp_path / "job.py"
    job.write_text(JOB)
    started = time.monotonic()
    entry = Entrypoint(tmp_path, {**env, "VMLAB_AGENT_MINUTE_SECONDS": "0.5"}, "--idle", "4", "--",
                       "python3", str(job), str(folder))
    try:
        code = entry.wait(timeout=60)
    finally:
        entry.close()
    assert code == 7  # JOB's answer to the SIGTERM the idle stop sent
    assert time.monotonic() - started >= 2  # 4 agent minutes of 0.5 s
    assert "idle" in entry.log_text().split("stopping", 1)[0].rsplit("\n", 1)[-1]
    assert objects(s3, bucket)["alice/data/last.txt"] == b"written during the stop"


def test_a_refused_sas_is_retried_never_logged_and_sigterm_still_exits(azurite: Any, tmp_path: Path) -> None:
    container = f"vmlab-{uuid.uuid4().hex[:12]}"
    azurite.service_client().create_container(container)
    forged = "sv=2024-01-01&ss=b&srt=sco&sp=rl&se=2099-01-01T00:00:00Z&sig=" + uuid.uuid4().hex + "%3D"
    entry = Entrypoint(tmp_path, {"AZURE_CONTAINER_URL": f"{azurite.endpoint}/{container}",
                                  "AZURE_BLOB_SAS_TOKEN": forged}, "--", "touch", str(tmp_path / "started"))
    try:
        entry.wait_log("failed, retrying")
        code, seconds = entry.terminate()
    finally:
        entry.close()
    assert code == 128 + 15 and seconds < 10
    log = entry.log_text()
    assert "not starting the command" in log and not (tmp_path / "started").exists()
    assert forged not in log and uuid.UUID(forged.split("sig=")[1][:32]).hex not in log


def test_as_pid_1_orphans_are_reaped(tmp_path: Path) -> None:
    import shutil
    import subprocess
    import sys

    from harness.drivers.entrypoint import container_env

    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "--pid", "--fork", "--mount-proc", "true"],
                                         capture_output=True).returncode != 0:
        pytest.skip("no PID namespace here (unshare --pid needs root)")
    script = "for i in 1 2 3; do (sleep 0.2 &); done; sleep 1.5; ps -eo pid=,ppid=,stat=,comm="
    done = subprocess.run([unshare, "--pid", "--fork", "--mount-proc", sys.executable, "-m", "vmlab.agent", "run",
                           "--", "sh", "-c", script], env=container_env(tmp_path), capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    table = [line.split() for line in done.stdout.splitlines()]
    assert table[0][:2] == ["1", "0"]  # the agent is PID 1
    assert not [row for row in table if row[2].startswith("Z")], done.stdout  # the orphaned sleeps were reaped


def test_a_stop_before_any_restore_succeeded_overwrites_nothing_in_the_store(moto_server: Any, s3: Any,
                                                                             tmp_path: Path) -> None:
    """The restore never succeeded (the bucket is missing at start), the store answers again, then SIGTERM: the
    local folder was never compared with the store, so its files must not overwrite the store's copies; the
    restore tried at the stop keeps both versions (a conflict copy) and the final push sends that copy."""
    bucket = f"vmlab-agent-{uuid.uuid4().hex[:12]}"
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "notes.txt").write_text("an old copy (from the image or an old volume)")
    env = {"AWS_S3_BUCKET_FOLDER": f"{bucket}/alice", "AWS_ACCESS_KEY_ID": "AKIAVMLABTEST",
           "AWS_SECRET_ACCESS_KEY": "vmlab-secret-x", "AWS_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": moto_server.endpoint, "AWS_MAX_ATTEMPTS": "1"}
    entry = Entrypoint(tmp_path, env, "--", "touch", str(tmp_path / "started"))
    try:
        entry.wait_log("retrying in 2s")  # the second failure: 2 s before the next try
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key="alice/notes.txt", Body=b"the newer copy")
        code, _ = entry.terminate()
    finally:
        entry.close()
    assert code == 128 + 15, entry.log_text()
    assert not (tmp_path / "started").exists()
    stored = objects(s3, bucket)
    assert stored["alice/notes.txt"] == b"the newer copy", entry.log_text()
    copies = [key for key in stored if key.startswith("alice/notes.conflict-")]
    assert len(copies) == 1 and stored[copies[0]] == b"an old copy (from the image or an old volume)"
    assert (folder / "notes.txt").read_text() == "the newer copy"


def test_a_stop_while_the_store_still_fails_pushes_nothing(moto_server: Any, s3: Any, tmp_path: Path) -> None:
    bucket = f"vmlab-agent-{uuid.uuid4().hex[:12]}"
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "notes.txt").write_text("local")
    env = {"AWS_S3_BUCKET_FOLDER": f"{bucket}/alice", "AWS_ACCESS_KEY_ID": "AKIAVMLABTEST",
           "AWS_SECRET_ACCESS_KEY": "vmlab-secret-x", "AWS_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": moto_server.endpoint, "AWS_MAX_ATTEMPTS": "1"}
    entry = Entrypoint(tmp_path, env, "--", "touch", str(tmp_path / "started"))
    try:
        entry.wait_log("retrying in 1s")
        code, _ = entry.terminate()
    finally:
        entry.close()
    assert code == 128 + 15
    assert "stopped before the restore succeeded: nothing pushed" in entry.log_text()
    assert (folder / "notes.txt").read_text() == "local" and not (tmp_path / "started").exists()


def test_a_command_that_ends_by_itself_gets_its_whole_final_push(salad_s3: Any, s3: Any, moto_server: Any,
                                                                 tmp_path: Path) -> None:
    """The grace period is for a stop someone asked for. A job that writes its result and exits (nobody is about
    to kill the container) must not be cut off after it: the agent waits for the upload, however long."""
    from harness.faults.awsfaults import FaultProxy

    folder, bucket, env = salad_s3
    script = f"import pathlib; pathlib.Path({str(folder)!r}, 'result.txt').write_text('the result')"
    with FaultProxy(moto_server.endpoint) as proxy:
        proxy.delay(f"PUT /{bucket}/alice/data/result.txt", 4)  # a large result on a slow link
        entry = Entrypoint(tmp_path, {**env, "AWS_ENDPOINT_URL": proxy.endpoint, "VMLAB_GRACE_SECONDS": "2"},
                           "--", "python3", "-c", script)
        try:
            code = entry.wait()
        finally:
            entry.close()
        assert code == 0, entry.log_text()
        assert objects(s3, bucket)["alice/data/result.txt"] == b"the result"
    assert "nothing left to push; exiting with 0" in entry.log_text()


def test_a_state_folder_inside_the_data_folder_is_never_uploaded(fake_gcs: Any, tmp_path: Path) -> None:
    """docs/containers.md says to keep the state on the data volume; when it is inside the synced folder, the
    service account key written there (and the manifest, journal, JupyterLab token) must not reach the bucket."""
    bucket = f"vmlab-{uuid.uuid4().hex[:12]}"
    admin = fake_gcs.client().create_bucket(bucket)
    key = json.dumps({"type": "service_account", "project_id": "vmlab-test", "private_key_id": uuid.uuid4().hex})
    folder = tmp_path / "data"
    script = f"import pathlib; pathlib.Path({str(folder)!r}, 'new.txt').write_text('to gcs')"
    entry = Entrypoint(tmp_path, {"GOOGLE_BUCKET_FOLDER": f"{bucket}/sa1", "GOOGLE_APPLICATION_CREDENTIALS": key,
                                  "GOOGLE_PROJECT_ID": "vmlab-test", "STORAGE_EMULATOR_HOST": fake_gcs.endpoint,
                                  "VMLAB_AGENT_STATE_DIR": str(folder / ".vmlab-state")},
                       "--", "python3", "-c", script)
    try:
        code = entry.wait()
    finally:
        entry.close()
    assert code == 0
    assert (folder / ".vmlab-state" / "google-credentials.json").exists()
    names = sorted(blob.name for blob in admin.list_blobs())
    assert [name for name in names if not name.startswith("sa1/.~")] == ["sa1/new.txt"], names
