"""The container environment `vmlab-agent run` reads: vmlab's own variables and the names SaladCloud's prebuilt
JupyterLab images use, checked before anything starts, and the list of values that must never reach a log.

Which store (see vmlab.agent.stores.find_sync_url): `VMLAB_SYNC_URL` wins; else the one prebuilt-image variable
that is set. Two of those set is an error: the prebuilt image synced with each of them, which leaves no single
copy that is the truth; name the one to use in `VMLAB_SYNC_URL`.

| variable | meaning |
|---|---|
| `AWS_S3_BUCKET_FOLDER` | `bucket/folder` (no scheme): the data folder is synced with `s3://bucket/folder/` |
| `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION` | read by boto3 itself (`AWS_ENDPOINT_URL` for tests) |
| `AZURE_CONTAINER_URL` | `https://ACCOUNT.blob.core.windows.net/CONTAINER[/folder]`, without the SAS |
| `AZURE_BLOB_SAS_TOKEN` | the container's SAS (with or without its leading `?`); never logged |
| `GOOGLE_BUCKET_FOLDER` | `bucket/folder`: synced with `gs://bucket/folder/` |
| `GOOGLE_APPLICATION_CREDENTIALS` | a key file's path, or (as SaladCloud passes it) the key's JSON text itself |
| `GOOGLE_PROJECT_ID` | the project (optional) |
| `JUPYTERLAB_PW` | the JupyterLab password (hashed; unset: a token, never the prebuilt image's default `data`) |

Example::

    env = ContainerEnv.load(os.environ, state_dir)   # BadInput on a bad value, before anything starts
    env.sync_url                                     # "s3://bucket/alice" or None
    env.child_env                                    # what CMD gets (JUPYTERLAB_PW removed, key file path)
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from vmlab import syncurl
from vmlab.errors import BadInput

# Values never written to a log (the agent's log filter replaces them) nor passed on a command line.
SECRET_NAMES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_BLOB_SAS_TOKEN", "AZURE_STORAGE_KEY",
                "GOOGLE_APPLICATION_CREDENTIALS", "JUPYTERLAB_PW", "JUPYTER_TOKEN", "JUPYTERHUB_API_TOKEN")
# Values kept from CMD: it gets the password's hash (in a config file), never the password.
CHILD_DROPPED = ("JUPYTERLAB_PW",)
KEY_FILE = "google-credentials.json"


@dataclass(frozen=True)
class ContainerEnv:
    """The checked environment. `sync_url` None: nothing to sync. `store_env`: the environment the store is
    opened with (a Google key given as JSON text is written to a 0600 file and named by its path);
    `child_env`: CMD's environment; `secrets`: values to keep out of logs."""

    sync_url: str | None
    source: str
    store_env: dict[str, str] = field(repr=False)
    child_env: dict[str, str] = field(repr=False)
    secrets: tuple[str, ...] = field(repr=False, default=())

    @classmethod
    def load(cls, env: Mapping[str, str], state_dir: Path) -> ContainerEnv:
        from vmlab.agent.stores import find_sync_url

        url = find_sync_url(env)
        source = _source(env) if url else ""
        if url:
            syncurl.parse(url, what=source)  # a bad value fails here, before the restore
        store_env = dict(env)
        secrets = tuple(v for name in SECRET_NAMES if len(v := env.get(name, "").strip()) >= 4)
        key = env.get("GOOGLE_APPLICATION_CREDENTIALS", "").strip()
        if key and url and url.startswith("gs://"):
            store_env["GOOGLE_APPLICATION_CREDENTIALS"] = str(google_key_file(key, state_dir))
        child = {k: v for k, v in store_env.items() if k not in CHILD_DROPPED}
        return cls(url, source, store_env, child, secrets)


def _source(env: Mapping[str, str]) -> str:
    for name in ("VMLAB_SYNC_URL", "AWS_S3_BUCKET_FOLDER", "AZURE_CONTAINER_URL", "GOOGLE_BUCKET_FOLDER"):
        if env.get(name, "").strip():
            return name
    return ""


def google_key_file(value: str, state_dir: Path) -> Path:
    """The path google-auth reads: `value` itself when it is one (it must exist), else `value` is the key's JSON
    text (SaladCloud's way), written to `state_dir/google-credentials.json` with mode 0600. BadInput otherwise;
    the message never quotes the value."""
    if not value.startswith("{"):
        path = Path(value).expanduser()
        if not path.is_file():
            raise BadInput("GOOGLE_APPLICATION_CREDENTIALS names no readable file",
                           "set it to a service account key file, or to the key's JSON text")
        return path
    try:
        key = json.loads(value)
    except ValueError:
        raise BadInput("GOOGLE_APPLICATION_CREDENTIALS is neither a file path nor JSON",
                       "paste the whole service account key file (JSON) into it") from None
    if not isinstance(key, dict) or not isinstance(key.get("type"), str):
        raise BadInput("GOOGLE_APPLICATION_CREDENTIALS is JSON but no key (no \"type\")",
                       "paste the service account key file downloaded from the GCP console")
    path = state_dir / KEY_FILE
    write_private(path, value)
    return path


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` (mode 0600, its folder 0700 when made here), replacing it whole."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


class Redact(logging.Filter):
    """Replaces each secret value in a log record's text by `***` (a SAS in an SDK's error message, a key
    echoed by a failing command). Example: `handler.addFilter(Redact(env.secrets))`."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        super().__init__()
        self.secrets = sorted(set(secrets), key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        text = record.getMessage()
        for secret in self.secrets:
            text = text.replace(secret, "***")
        record.msg, record.args = text, None
        if record.exc_info:
            import traceback

            record.msg += "\n" + "".join(traceback.format_exception(*record.exc_info))
            for secret in self.secrets:
                record.msg = record.msg.replace(secret, "***")
            record.exc_info, record.exc_text = None, None
        return True
