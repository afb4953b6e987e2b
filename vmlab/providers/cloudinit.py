"""cloud-init user data every provider writes: host key entries, merging the caller's user data, rendering.

Pure functions (no I/O), shared by the local seed ISO and EC2's `UserData`, so both install a pinned SSH host key
the same way and treat a caller's `#cloud-config` or script the same way.

Example::

    cfg = {"ssh_deletekeys": True, "ssh_keys": host_key_entries(host_private_key)}
    text = render_user_data(cfg, spec.user_data)      # "#cloud-config ..." or a MIME multipart document
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from vmlab.errors import BadInput

_KEY_KINDS = {"ssh-ed25519": "ed25519", "ssh-rsa": "rsa", "ecdsa-sha2-nistp256": "ecdsa",
              "ecdsa-sha2-nistp384": "ecdsa", "ecdsa-sha2-nistp521": "ecdsa"}


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


#: sshd must never start without host keys. cloud-init makes them at a new instance's first boot (the scrub
#: cleans its state, so every VM from the image is a new instance); this drop-in, in vmlab's local base image and
#: in every image vmlab bakes, is the fallback when it did not run, for Debian and Ubuntu (Ubuntu 24.04's
#: socket-activated ssh.service included)
HOSTKEY_DROPIN = """\
[Unit]
After=cloud-init.service

[Service]
ExecStartPre=
ExecStartPre=/bin/sh -c 'ls /etc/ssh/ssh_host_*_key >/dev/null 2>&1 || /usr/bin/ssh-keygen -A'
ExecStartPre=/usr/sbin/sshd -t
"""
