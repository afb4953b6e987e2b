"""Images out of vmlab's storage: an OCI layout folder, a docker-archive tar, or a push to a registry, with
skopeo (vmlab's engine settings and its own signature policy file, never /etc/containers/policy.json).

TLS is verified for every registry except one on this machine's loopback (127.0.0.1, ::1, localhost), where a
test or a developer runs a plain-HTTP registry. No registry is assumed: a destination names its host.

Example::

    digest = push(engine, "localhost/vmlab/lab:0a1b2c3d4e5f", check_destination("127.0.0.1:5000/lab:v1"))
    print(digest)     # sha256:...
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from vmlab.errors import BadInput
from vmlab.providers.container.engine import Podman

# HOST[:PORT]/PATH[:TAG]
DEST_RE = re.compile(r"(?P<host>[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?|\[[0-9a-f:]+\])(?::(?P<port>[0-9]{1,5}))?/"
                     r"(?P<path>[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*)"
                     r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?")
LOOPBACK = ("127.0.0.1", "localhost", "[::1]")
FORMATS = ("oci", "docker-archive")


def check_destination(text: str) -> str:
    """A registry reference `HOST[:PORT]/REPO[:TAG]` (BadInput otherwise), as given."""
    if not DEST_RE.fullmatch(text):
        raise BadInput(f"{text!r} is not a registry reference",
                       "use HOST[:PORT]/REPO[:TAG], e.g. 127.0.0.1:5000/lab:v1 or ghcr.io/me/lab:v1")
    return text


def on_loopback(dest: str) -> bool:
    """Whether the registry of `dest` is on this machine's loopback (plain HTTP allowed there only)."""
    match = DEST_RE.fullmatch(dest)
    return bool(match and match.group("host") in LOOPBACK)


def source(ref: str) -> str:
    """skopeo's name for an image in the engine's storage (the storage comes from CONTAINERS_STORAGE_CONF)."""
    return f"containers-storage:{ref}"


def export(engine: Podman, ref: str, kind: str, dest: Path) -> Path:
    """Write image `ref` as an OCI layout folder (`oci`, tag `latest`) or a docker-archive tar file."""
    if kind not in FORMATS:
        raise BadInput(f"unknown export format {kind!r}", f"use one of {', '.join(FORMATS)}")
    target = f"oci:{dest}:latest" if kind == "oci" else f"docker-archive:{dest}:{ref.removeprefix('localhost/')}"
    engine.text("copy", "--quiet", source(ref), target, what=f"exporting {ref}", program="skopeo")
    return dest


def push(engine: Podman, ref: str, dest: str) -> str:
    """Push image `ref` to registry reference `dest`; returns the manifest digest the registry stored."""
    dest = check_destination(dest)
    with tempfile.TemporaryDirectory(prefix="vmlab-push-") as tmp:
        digest_file = Path(tmp) / "digest"
        engine.text("copy", "--quiet", f"--dest-tls-verify={'false' if on_loopback(dest) else 'true'}",
                    "--digestfile", str(digest_file), source(ref), f"docker://{dest}", what=f"pushing to {dest}",
                    program="skopeo")
        return digest_file.read_text().strip()
