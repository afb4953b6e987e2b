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

#: where slirp (QEMU user networking) makes the host reachable from the guest
GUEST_HOST_ALIAS = "10.0.2.2"
#: the guest's system bundle; pip and requests are pointed at it so an intercepting proxy's CA is honoured
GUEST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
PROXY_VARS = ("http_proxy", "https_proxy", "no_proxy")

_PEM_RE = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)
_KEY_KINDS = {"ssh-ed25519": "ed25519", "ssh-rsa": "rsa", "ecdsa-sha2-nistp256": "ecdsa",
              "ecdsa-sha2-nistp384": "ecdsa", "ecdsa-sha2-nistp521": "ecdsa"}


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


def host_key_entries(private_key: str) -> dict[str, str]:
    """cloud-init `ssh_keys` entries for an OpenSSH or PEM private host key (the public half is derived).

    >>> sorted(host_key_entries(ed25519_text))  # doctest: +SKIP
    ['ed25519_private', 'ed25519_public']
    """
    from cryptography.hazmat.primitives import serialization

    data = private_key.encode()
    try:
        if b"BEGIN OPENSSH PRIVATE KEY" in data:
            key = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)  # type: ignore[assignment]
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH).decode()
    except (ValueError, TypeError, AttributeError) as exc:
        raise BadInput("the host key is not an unencrypted OpenSSH/PEM private key",
                       "pass the text of a key made by `ssh-keygen -t ed25519 -N ''`") from exc
    kind = _KEY_KINDS.get(public.split()[0])
    if kind is None:
        raise BadInput(f"host key type {public.split()[0]} is not supported", "use an ed25519 key")
    text = private_key if private_key.endswith("\n") else private_key + "\n"
    return {f"{kind}_private": text, f"{kind}_public": public}


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
    env_lines = [f"PIP_CERT={GUEST_CA_BUNDLE}", f"REQUESTS_CA_BUNDLE={GUEST_CA_BUNDLE}"]
    for var, value in proxy.items():
        env_lines += [f"{var}={value}", f"{var.upper()}={value}"]
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


def merge_config(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """Deep merge: mappings merge, lists concatenate (ours first), other values from the caller win."""
    out = dict(ours)
    for key, value in theirs.items():
        mine = out.get(key)
        if isinstance(mine, dict) and isinstance(value, dict):
            out[key] = merge_config(mine, value)
        elif isinstance(mine, list) and isinstance(value, list):
            out[key] = mine + value
        else:
            out[key] = value
    return out


class _Dumper(yaml.SafeDumper):
    """Writes multi-line strings (keys, certificates) as literal blocks so the seed stays readable."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_cloud_config(cfg: Mapping[str, Any]) -> str:
    """`#cloud-config` YAML text for a config mapping."""
    return "#cloud-config\n" + yaml.dump(dict(cfg), Dumper=_Dumper, sort_keys=False,
                                        default_flow_style=False, width=4096)


_SCRIPT_TYPES = {"#!": "text/x-shellscript", "#include": "text/x-include-url",
                 "#cloud-boothook": "text/cloud-boothook"}
BOUNDARY = "==vmlab-seed-boundary=="


def render_user_data(cfg: dict[str, Any], user_data: str | None) -> str:
    """The user-data file: vmlab's config merged with the caller's.

    A caller's `#cloud-config` is merged into one document; a script (`#!...`) or `#include` rides along as a
    second part of a MIME multipart document, which cloud-init runs after its own modules.
    """
    if not user_data or not user_data.strip():
        return dump_cloud_config(cfg)
    first = user_data.lstrip().splitlines()[0].strip()
    if first.startswith("#cloud-config"):
        try:
            theirs = yaml.safe_load(user_data)
        except yaml.YAMLError as exc:
            raise BadInput(f"user_data is not valid YAML: {str(exc).splitlines()[0]}",
                           "check the #cloud-config document") from exc
        if theirs is None:
            return dump_cloud_config(cfg)
        if not isinstance(theirs, dict):
            raise BadInput("user_data #cloud-config must be a mapping", "start it with keys such as runcmd:")
        return dump_cloud_config(merge_config(cfg, theirs))
    kind = next((t for prefix, t in _SCRIPT_TYPES.items() if first.startswith(prefix)), None)
    if kind is None:
        raise BadInput("user_data must start with #cloud-config, #! (a script) or #include",
                       "add the header line cloud-init expects")
    ours = dump_cloud_config(cfg)
    if BOUNDARY in user_data or BOUNDARY in ours:
        raise BadInput("user_data contains vmlab's MIME boundary", f"remove the text {BOUNDARY}")
    parts = [(ours, "text/cloud-config", "vmlab.cfg"), (user_data, kind, "user-script")]
    lines = ["Content-Type: multipart/mixed; boundary=\"" + BOUNDARY + "\"", "MIME-Version: 1.0", ""]
    for body, ctype, fname in parts:
        lines += [f"--{BOUNDARY}", f"Content-Type: {ctype}; charset=\"utf-8\"", "MIME-Version: 1.0",
                  f"Content-Disposition: attachment; filename=\"{fname}\"", "", body.rstrip("\n")]
    lines += [f"--{BOUNDARY}--", ""]
    return "\n".join(lines)


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
