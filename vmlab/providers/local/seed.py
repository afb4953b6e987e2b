"""The cloud-init NoCloud seed a local VM boots with: user-data, meta-data, and the ISO that carries them.

Everything here except `write_seed_iso` is pure, so the content is unit-tested without a VM.

Example::

    cfg = cloud_config(user="admin", ssh_public_key=pub, host_key=None, ca_certs=[], proxy={})
    text = render_user_data(cfg, spec.user_data)
    write_seed_iso(vm_dir / "seed.iso", text, meta_data("iid-lvm-1a2b-3c4d", "lab"))
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from vmlab.errors import BadInput, HostError

# The user-data rendering shared with other providers lives in vmlab.providers.cloudinit; these names stay
# importable from here (explicit re-exports) for the local provider and its tests.
from vmlab.providers.cloudinit import BOUNDARY as BOUNDARY
from vmlab.providers.cloudinit import dump_cloud_config as dump_cloud_config
from vmlab.providers.cloudinit import host_key_entries
from vmlab.providers.cloudinit import merge_config as merge_config
from vmlab.providers.cloudinit import render_user_data as render_user_data

#: where slirp (QEMU user networking) makes the host reachable from the guest
GUEST_HOST_ALIAS = "10.0.2.2"
#: the guest's system bundle; pip and requests are pointed at it so an intercepting proxy's CA is honoured
GUEST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
PROXY_VARS = ("http_proxy", "https_proxy", "no_proxy")
#: the markers around what the seed appends to /etc/environment (the scrub deletes from one to the other)
ENV_BEGIN = "# vmlab: host settings begin (removed when an image is made)"
ENV_END = "# vmlab: host settings end"

_PEM_RE = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def split_pem(text: str) -> list[str]:
    """The certificates in a PEM bundle, each normalised (stripped lines) so bundles can be compared."""
    return ["\n".join(line.strip() for line in m.group(0).splitlines()) for m in _PEM_RE.finditer(text)]


def extra_ca_certs(host_bundle: str, guest_bundle: str | None) -> list[str]:
    """Host certificates the guest does not already trust (e.g. an intercepting proxy's CA).

    Sending only these keeps the seed small and spares the guest a slow `update-ca-certificates` under TCG
    when there is nothing to add. Without the guest bundle every host certificate is sent.
    """
    known = set(split_pem(guest_bundle)) if guest_bundle else set()
    return [c for c in dict.fromkeys(split_pem(host_bundle)) if c not in known]


def guest_proxy_url(url: str) -> str:
    """A host proxy URL as the guest must use it: the host's loopback is 10.0.2.2 from inside slirp."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    host = parts.hostname or ""
    if host in ("localhost", "::1") or host.startswith("127."):
        netloc = parts.netloc.replace(f"[{host}]" if ":" in host else host, GUEST_HOST_ALIAS, 1)
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts)


def proxy_env(environ: Mapping[str, str]) -> dict[str, str]:
    """http_proxy/https_proxy/no_proxy from the host environment (either case), rewritten for the guest."""
    out: dict[str, str] = {}
    for var in PROXY_VARS:
        value = environ.get(var) or environ.get(var.upper())
        if value:
            out[var] = value if var == "no_proxy" else guest_proxy_url(value)
    return out


def hostname_for(name: str) -> str:
    """A valid hostname from a VM name: lower case letters, digits and dashes, at most 63 characters."""
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63].strip("-")
    return label or "vmlab"


def cloud_config(*, user: str, ssh_public_key: str, host_key: str | None, ca_certs: list[str],
                 proxy: Mapping[str, str]) -> dict[str, Any]:
    """The cloud-config vmlab needs in every VM: the default user with passwordless sudo and the caller's key,
    the pinned host key, the host's extra CA certificates, and the host's proxy settings for apt and pip."""
    if not ssh_public_key.strip() or len(ssh_public_key.split()) < 2:
        raise BadInput("ssh_public_key is not an OpenSSH public key line", "pass the text of KEY.pub")
    cfg: dict[str, Any] = {
        "users": [{
            "name": user, "gecos": "vmlab", "shell": "/bin/bash", "lock_passwd": True,
            "sudo": "ALL=(ALL) NOPASSWD:ALL", "ssh_authorized_keys": [ssh_public_key.strip()],
        }],
        "disable_root": True,
        "ssh_pwauth": False,
        "manage_etc_hosts": True,
        # the base image's sources.list (maybe a custom mirror) must survive cloud-init's apt module
        "apt": {"preserve_sources_list": True},
        "ssh_deletekeys": True,
    }
    if host_key:
        cfg["ssh_keys"] = host_key_entries(host_key)
    # between markers: settings of the host this VM runs on (its proxy may carry credentials), which the bake's
    # scrub removes so no image keeps them; a VM launched from the image gets its own host's at first boot
    env_lines = [ENV_BEGIN, f"PIP_CERT={GUEST_CA_BUNDLE}", f"REQUESTS_CA_BUNDLE={GUEST_CA_BUNDLE}"]
    for var, value in proxy.items():
        env_lines += [f"{var}={value}", f"{var.upper()}={value}"]
    env_lines.append(ENV_END)
    for var in ("http_proxy", "https_proxy"):
        if var in proxy:
            cfg["apt"][var] = proxy[var]
    cfg["write_files"] = [
        {"path": "/etc/environment", "append": True, "content": "\n".join(env_lines) + "\n"},
        {"path": "/etc/pip.conf", "permissions": "0644",
         "content": f"[global]\ncert = {GUEST_CA_BUNDLE}\n"},
        *ca_cert_files(ca_certs),
    ]
    return cfg


def ca_cert_files(ca_certs: list[str]) -> list[dict[str, Any]]:
    """write_files entries that put extra CA certificates into the guest's trust store.

    Each certificate goes to /usr/local/share/ca-certificates (so every later `update-ca-certificates` keeps it)
    and is appended to the live bundle right away. cloud-init's `ca_certs` module would run
    `update-ca-certificates`, which takes ~35 s under TCG for the same result.
    """
    files: list[dict[str, Any]] = [
        {"path": f"/usr/local/share/ca-certificates/vmlab-host-{i}.crt", "permissions": "0644",
         "content": cert + "\n"} for i, cert in enumerate(ca_certs)]
    if ca_certs:
        files.append({"path": GUEST_CA_BUNDLE, "append": True, "content": "\n".join(ca_certs) + "\n"})
    return files


def meta_data(instance_id: str, hostname: str) -> str:
    """NoCloud meta-data: a fresh instance-id makes cloud-init treat the boot as a new instance."""
    return yaml.safe_dump({"instance-id": instance_id, "local-hostname": hostname_for(hostname)},
                          sort_keys=False)


def write_seed_iso(target: Path, user_data: str, meta: str) -> Path:
    """Write the NoCloud seed ISO (volume id `cidata`) with genisoimage; the file is private (it may hold the
    host key)."""
    with tempfile.TemporaryDirectory(prefix="vmlab-seed-") as tmp:
        src = Path(tmp)
        (src / "user-data").write_text(user_data)
        (src / "meta-data").write_text(meta)
        proc = subprocess.run(["genisoimage", "-quiet", "-output", str(target), "-volid", "cidata",
                               "-joliet", "-rock", str(src / "user-data"), str(src / "meta-data")],
                              capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise HostError(f"genisoimage failed: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}",
                        "apt-get install genisoimage")
    target.chmod(0o600)
    return target
