"""The container environment `vmlab-agent run` reads (SaladCloud's names and vmlab's), its log filter, and the
JupyterLab command it builds: no secret on a command line, never without authentication."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from vmlab.agent.jupyter import jupyter_command
from vmlab.agent.saladenv import ContainerEnv, Redact
from vmlab.errors import BadInput

SAS = "sv=2024-01-01&sr=c&sp=racwdl&sig=c2VjcmV0LXNpZ25hdHVyZQ%3D%3D"


@pytest.mark.parametrize(("env", "url", "source"), [
    ({"AWS_S3_BUCKET_FOLDER": "my-bucket/user1"}, "s3://my-bucket/user1", "AWS_S3_BUCKET_FOLDER"),
    ({"AZURE_CONTAINER_URL": "https://acct.blob.core.windows.net/lab", "AZURE_BLOB_SAS_TOKEN": SAS},
     "https://acct.blob.core.windows.net/lab", "AZURE_CONTAINER_URL"),
    ({"GOOGLE_BUCKET_FOLDER": "my-bucket/sa1"}, "gs://my-bucket/sa1", "GOOGLE_BUCKET_FOLDER"),
    ({"VMLAB_SYNC_URL": "s3://mine/x", "AWS_S3_BUCKET_FOLDER": "other/y"}, "s3://mine/x", "VMLAB_SYNC_URL"),
    ({}, None, ""),
])
def test_the_store_comes_from_vmlab_or_salad_names(env: dict[str, str], url: str | None, source: str,
                                                   tmp_path: Path) -> None:
    loaded = ContainerEnv.load(env, tmp_path)
    assert (loaded.sync_url, loaded.source) == (url, source)


def test_two_salad_stores_are_refused(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="AWS_S3_BUCKET_FOLDER and AZURE_CONTAINER_URL are both set"):
        ContainerEnv.load({"AWS_S3_BUCKET_FOLDER": "b/x", "AZURE_CONTAINER_URL": "https://a.blob.core.windows.net/c"},
                          tmp_path)


@pytest.mark.parametrize("folder", ["bucket/a*", "bucket/$HOME", "Bad_Bucket/x", "bucket/a\nb"])
def test_bad_folders_are_refused_before_anything_starts(folder: str, tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="AWS_S3_BUCKET_FOLDER"):
        ContainerEnv.load({"AWS_S3_BUCKET_FOLDER": folder}, tmp_path)


def test_the_password_is_kept_from_the_command_and_secrets_are_listed(tmp_path: Path) -> None:
    env = {"AZURE_CONTAINER_URL": "https://acct.blob.core.windows.net/lab", "AZURE_BLOB_SAS_TOKEN": SAS,
           "JUPYTERLAB_PW": "hunter2hunter2", "PATH": "/usr/bin"}
    loaded = ContainerEnv.load(env, tmp_path)
    assert "JUPYTERLAB_PW" not in loaded.child_env and loaded.child_env["PATH"] == "/usr/bin"
    assert set(loaded.secrets) == {SAS, "hunter2hunter2"}
    assert SAS not in repr(loaded)


def test_a_google_key_given_as_json_text_becomes_a_private_file(tmp_path: Path) -> None:
    key = json.dumps({"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----x"})
    loaded = ContainerEnv.load({"GOOGLE_BUCKET_FOLDER": "b/sa1", "GOOGLE_APPLICATION_CREDENTIALS": key},
                               tmp_path / "state")
    path = Path(loaded.store_env["GOOGLE_APPLICATION_CREDENTIALS"])
    assert path.read_text() == key and path.stat().st_mode & 0o777 == 0o600
    assert loaded.child_env["GOOGLE_APPLICATION_CREDENTIALS"] == str(path)
    assert key in loaded.secrets


@pytest.mark.parametrize(("value", "message"), [
    ("{not json", "neither a file path nor JSON"),
    ('{"project_id": "p"}', "no key"),
    ("/no/such/key.json", "names no readable file"),
])
def test_bad_google_keys_are_refused_without_quoting_them(value: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(BadInput, match=message) as caught:
        ContainerEnv.load({"GOOGLE_BUCKET_FOLDER": "b/sa1", "GOOGLE_APPLICATION_CREDENTIALS": value}, tmp_path)
    assert value not in str(caught.value)


def test_redact_replaces_secrets_in_messages_and_tracebacks() -> None:
    record = logging.LogRecord("vmlab.agent", logging.ERROR, __file__, 1, "GET %s failed", (f"/c?{SAS}",), None)
    try:
        raise OSError(f"refused: {SAS}")
    except OSError:
        import sys

        record.exc_info = sys.exc_info()
    assert Redact((SAS,)).filter(record)
    assert SAS not in record.getMessage() and "GET /c?*** failed" in record.getMessage()
    assert "refused: ***" in record.getMessage()


def test_jupyterlab_gets_a_password_hash_in_a_private_file_never_the_password(tmp_path: Path) -> None:
    from argon2 import PasswordHasher

    launch = jupyter_command({"JUPYTERLAB_PW": "correct horse", "PATH": "/usr/bin:/bin"}, tmp_path, 8000,
                             "0.0.0.0", tmp_path / "data")
    config_file = tmp_path / "jupyter/jupyter_server_config.json"
    config = json.loads(config_file.read_text())
    hashed = config["PasswordIdentityProvider"]["hashed_password"]
    assert PasswordHasher().verify(hashed.removeprefix("argon2:"), "correct horse")
    assert "correct horse" not in config_file.read_text()
    assert config_file.stat().st_mode & 0o777 == 0o600
    assert not any("correct horse" in arg or launch.env["JUPYTER_TOKEN"] in arg for arg in launch.argv)
    assert {f"--config={config_file}", "--ip=0.0.0.0", "--port=8000"} <= set(launch.argv)
    assert launch.show_token == ""  # a password: the internal token is never shown
    assert (tmp_path / "jupyter/jupyter.env").stat().st_mode & 0o777 == 0o600


def test_jupyterlab_without_secrets_gets_a_fresh_token_to_show(tmp_path: Path) -> None:
    first = jupyter_command({"PATH": "/usr/bin:/bin"}, tmp_path, None, None, tmp_path)
    second = jupyter_command({"PATH": "/usr/bin:/bin"}, tmp_path, None, None, tmp_path)
    assert len(first.show_token) >= 32 and first.show_token != second.show_token
    assert first.env["JUPYTER_TOKEN"] == first.show_token
    assert "--ip=127.0.0.1" in first.argv and "--port=8888" in first.argv  # loopback by default


def test_a_hub_spawner_gets_jupyterhub_singleuser(tmp_path: Path) -> None:
    launch = jupyter_command({"JUPYTERHUB_API_TOKEN": "t" * 32, "PATH": "/usr/bin:/bin"}, tmp_path, None, None,
                             tmp_path)
    assert Path(launch.argv[0]).name == "jupyterhub-singleuser"
    assert not any(arg.startswith(("--ip", "--port")) for arg in launch.argv)  # the spawner's address


@pytest.mark.parametrize(("env", "ip", "message"), [
    ({"JUPYTER_TOKEN": "short"}, None, "JUPYTER_TOKEN is shorter"),
    ({"JUPYTER_TOKEN": "a" * 20 + " b"}, None, "JUPYTER_TOKEN"),
    ({}, "localhost; rm -rf /", "is not an IP address"),
])
def test_bad_jupyter_values_are_refused(env: dict[str, str], ip: str | None, message: str,
                                        tmp_path: Path) -> None:
    with pytest.raises(BadInput, match=message):
        jupyter_command({**env, "PATH": "/usr/bin:/bin"}, tmp_path, None, ip, tmp_path)


def test_a_runs_hard_limit_counts_from_its_start_unless_a_deadline_is_ahead() -> None:
    from vmlab.agent.runplan import run_deadline

    assert run_deadline(0, 3600, 1000.0) == 4600.0  # VMLAB_MAX_HOURS alone: from this start
    assert run_deadline(9000, 3600, 1000.0) == 9000  # a deadline still ahead wins
    assert run_deadline(500, 3600, 1000.0) == 4600.0  # one from an earlier start of the container: a new period
    assert run_deadline(500, 0, 1000.0) == 0.0 and run_deadline(0, 0, 1000.0) == 0.0  # no limit
