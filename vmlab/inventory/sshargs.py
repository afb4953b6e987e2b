"""The parts of `ansible_ssh_common_args` / `ansible_ssh_extra_args` / `ansible_ssh_args` vmlab honours.

Honoured: `-i KEY`, `-p PORT`, `-l USER`, `-J JUMP`, and `-o` with IdentityFile, Port, User, ProxyJump,
ProxyCommand, UserKnownHostsFile / GlobalKnownHostsFile (the host's key found there is pinned) and
StrictHostKeyChecking=yes|ask|accept-new. As in OpenSSH, the first of ProxyJump / ProxyCommand given wins; a
ProxyJump chain (`a,b`) is refused. Options that only tune speed or logging (ControlMaster,
ServerAliveInterval, ConnectTimeout, Compression, ...) are ignored. Everything else is refused in one line
naming the host, so a connection never silently differs from what OpenSSH would do;
`StrictHostKeyChecking=no`, `UserKnownHostsFile=/dev/null` are refused (reviewed): vmlab always checks host keys
(reviewed: this module refuses them, never applies them).

    >>> parse_ssh_args("-o ProxyJump=admin@bastion -i ~/.ssh/k", "ansible_ssh_common_args", "web1").proxy_jump
    'admin@bastion'
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field

from vmlab.errors import BadInput

IGNORED_OPTIONS = frozenset({
    "controlmaster", "controlpersist", "controlpath", "serveraliveinterval", "serveralivecountmax",
    "connecttimeout", "connectionattempts", "compression", "tcpkeepalive", "loglevel", "identitiesonly",
    "pubkeyauthentication", "preferredauthentications", "passwordauthentication", "kbdinteractiveauthentication",
    "gssapiauthentication", "batchmode", "hashknownhosts", "checkhostip", "visualhostkey", "ipqos",
    "addkeystoagent", "requesttty", "forwardx11", "forwardx11trusted",
})
IGNORED_FLAGS = frozenset({"-C", "-q", "-T", "-t", "-tt", "-v", "-vv", "-vvv", "-x", "-n"})
Refuse = Callable[..., BadInput]
HOST_KEYS_FIX = "vmlab always checks host keys (trust on first use in its own known_hosts, or pin one with " \
                "vmlab_host_key); remove the option"


@dataclass
class SSHOptions:
    """What an ssh command line asks for, as far as vmlab can honour it."""

    key_files: list[str] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    proxy_jump: str | None = None
    proxy_command: str | None = None
    known_hosts_files: list[str] = field(default_factory=list)
    strict_host_keys: bool = False
    proxy_given: bool = field(default=False, repr=False)  # ProxyJump and ProxyCommand: the first one given wins


def parse_ssh_args(text: str, var: str, host: str, into: SSHOptions | None = None) -> SSHOptions:
    """Read one ssh argument string (from variable `var` of `host`); BadInput for what vmlab cannot honour."""
    out = into or SSHOptions()

    def refuse(what: str, fix: str = "remove it, or set the matching ansible_* variable instead") -> BadInput:
        return BadInput(f"host {host}: {var}: {what}", fix)

    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise refuse(f"cannot split {text!r} ({exc})", "check the quotes") from None
    i = 0
    while i < len(words):
        word = words[i]
        flag, glued = word[:2], word[2:]
        if word in IGNORED_FLAGS:
            i += 1
            continue
        if flag not in ("-o", "-i", "-p", "-l", "-J", "-F") or not word.startswith("-"):
            raise refuse(f"ssh argument {word!r} is not supported by vmlab")
        if glued:
            value = glued
        elif i + 1 < len(words):
            value = words[i + 1]
            i += 1
        else:
            raise refuse(f"{flag} needs a value")
        i += 1
        if flag == "-o":
            _option(value, out, refuse)
        elif flag == "-F":
            raise refuse("-F: vmlab does not read ssh config files", "put the settings in ansible_* variables")
        else:
            _set({"-i": "identityfile", "-p": "port", "-l": "user", "-J": "proxyjump"}[flag], value, out, refuse)
    return out


def _option(text: str, out: SSHOptions, refuse: Refuse) -> None:
    key, sep, value = text.partition("=")
    if not sep:
        key, _, value = text.strip().partition(" ")
    key, value = key.strip().lower(), value.strip()
    _set(key, value, out, refuse)


def _set(key: str, value: str, out: SSHOptions, fail: Refuse) -> None:
    if key in IGNORED_OPTIONS:
        return
    if key == "identityfile":
        out.key_files.append(value)
    elif key == "port":
        if not value.isdigit() or not 0 < int(value) < 65536:
            raise fail(f"port {value!r} is not a number from 1 to 65535")
        out.ports.append(int(value))
    elif key == "user":
        out.users.append(value)
    elif key in ("proxyjump", "proxycommand"):
        _proxy(key, value, out, fail)
    elif key == "stricthostkeychecking":
        if value.lower() in ("yes", "ask", "true"):  # non-interactive `ask` refuses unknown hosts, like yes
            out.strict_host_keys = True
        elif value.lower() != "accept-new":
            raise fail(f"StrictHostKeyChecking={value} is refused", HOST_KEYS_FIX)
    elif key in ("userknownhostsfile", "globalknownhostsfile"):
        files = [f for f in value.split() if f != "/dev/null" or key == "userknownhostsfile"]
        if "/dev/null" in files or value.lower() == "none":
            raise fail(f"UserKnownHostsFile={value} is refused", HOST_KEYS_FIX)
        out.known_hosts_files.extend(files)
    elif key == "forwardagent":
        if value.lower() not in ("no", "false"):
            raise fail("ForwardAgent is not supported by vmlab (it never forwards your SSH agent)")
    else:
        raise fail(f"ssh option -o {key}={value} is not supported by vmlab")


def _proxy(key: str, value: str, out: SSHOptions, fail: Refuse) -> None:
    # like OpenSSH: whichever of ProxyJump / ProxyCommand comes first (even `none`) stops the other
    if key == "proxyjump" and "," in value:
        raise fail(f"ProxyJump {value!r}: ProxyJump chains are not supported; use one jump host")
    if out.proxy_given:
        return
    out.proxy_given = True
    if value.lower() == "none":
        return
    if key == "proxyjump":
        out.proxy_jump = value
    else:
        out.proxy_command = value
