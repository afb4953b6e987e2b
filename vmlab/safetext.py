"""Values from outside (cloud tags, lab records, inventories, flags) checked before vmlab writes them into a
config file or a command line: ssh_config, known_hosts, agent.env, systemd units, shell.

Such a value is data. A newline in an image's `vmlab:user` tag would otherwise become a line of its own in the
generated ssh_config (`ProxyCommand ...`, run on the next `ssh lab`), a space an extra word in a unit's
`User=`. Every writer checks what it writes with these functions; each raises BadInput naming the value, where it
came from and how to fix it.

Example::

    user = check_user(tags["vmlab:user"], "the vmlab:user tag of image ami-0abc")   # 'ubuntu'
    check_word("i-0abc\\n", "instance id")      # BadInput: ... contains a line break
"""

from __future__ import annotations

import re
import unicodedata
from typing import TYPE_CHECKING

from vmlab.errors import BadInput

if TYPE_CHECKING:
    from vmlab.state import LabRecord

#: a login name as useradd accepts it by default, and that no config file can misread
USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
LOGIN_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._@-]{0,255}")
#: a host name, IPv4 or IPv6 address (with a %zone)
HOST_RE = re.compile(r"[A-Za-z0-9_.:%-]+")
_NAMES = {"\n": "a line break", "\r": "a carriage return", "\t": "a tab", " ": "a space"}


def _show(value: str) -> str:
    """The value as a one-line quoted string (escapes visible), cut when long."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "...'"


def unsafe_char(value: str, spaces: bool = False) -> str | None:
    """A description of the first character that must not be written (`spaces`: except the plain space), or
    None. For a value that must not be shown (it holds a secret) and so is checked without check_word."""
    for c in value:
        category = unicodedata.category(c)
        # Cc: control characters (newline, escape, DEL); Cf: invisible format characters; Zl/Zp: line separators
        if category in ("Cc", "Cf", "Zl", "Zp") or (c.isspace() and not (spaces and c == " ")):
            return _NAMES.get(c, f"the character U+{ord(c):04X}")
    return None


def check_text(value: object, what: str, fix: str = "") -> str:
    """A one-line value that may hold spaces (a file path, a URL): no control or line-break characters."""
    if not isinstance(value, str):
        raise BadInput(f"{what} is not text ({type(value).__name__})", fix)
    bad = unsafe_char(value, spaces=True)
    if bad:
        raise BadInput(f"{what} {_show(value)} contains {bad}", fix or "use a value without control characters")
    return value


def check_word(value: object, what: str, fix: str = "") -> str:
    """One word: not empty, no whitespace or control characters, not starting with '-' (never an option)."""
    text = check_text(value, what, fix)
    bad = unsafe_char(text, spaces=False)
    if bad or not text or text.startswith("-"):
        reason = f"contains {bad}" if bad else "is empty" if not text else "starts with '-'"
        raise BadInput(f"{what} {_show(text)} {reason}", fix or "use one word without spaces")
    return text


def check_user(value: object, what: str) -> str:
    """A login user name: `^[a-z_][a-z0-9_-]*$` (at most 32 characters)."""
    fix = "use a user name of lowercase letters, digits, '_' and '-' (e.g. ubuntu, admin)"
    text = check_text(value, what, fix)
    if not USER_RE.fullmatch(text):
        raise BadInput(f"{what} {_show(text)} is not a valid user name", fix)
    return text


def check_login_user(value: object, what: str) -> str:
    """A user to log in as over SSH (an inventory's ansible_user): looser than `check_user`, as Ansible accepts
    names like first.last, Administrator, svc.ci or user@domain: `[A-Za-z0-9_][A-Za-z0-9._@-]*`, one word.
    Never written into unit files (there `check_user` applies)."""
    fix = "use a user name of letters, digits and '._@-' (e.g. ubuntu, first.last)"
    text = check_word(value, what, fix)
    if not LOGIN_RE.fullmatch(text):
        raise BadInput(f"{what} {_show(text)} is not a valid login name", fix)
    return text


def check_host(value: object, what: str) -> str:
    """A host name or address: letters, digits and `._:%-`, not starting with '-'."""
    fix = "use a host name or an IP address"
    text = check_word(value, what, fix)
    if not HOST_RE.fullmatch(text):
        raise BadInput(f"{what} {_show(text)} is not a host name or address", fix)
    return text


def check_port(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
        raise BadInput(f"{what} {value!r} is not a port number", "use a number between 1 and 65535")
    return value


def check_public_key(value: object, what: str) -> str:
    """An OpenSSH public key line; returns `TYPE BASE64` (a comment, which could hold anything, is dropped)."""
    from vmlab.transport.hostkeys import HostKey

    text = check_text(value, what, "use the key's line as in a .pub file")
    return HostKey.from_line(text, what=what).line()


def check_record(record: LabRecord) -> LabRecord:
    """Every field of a lab record that vmlab writes into ssh_config, known_hosts or an `ssh` command line.
    A record is local state, but older vmlab versions copied the user from an image tag unchecked, and the file
    may have been edited: checked at each writer, not trusted."""
    from vmlab.state import check_name

    name = check_name(record.name)
    where = f"lab {name}'s"
    fix = f"recreate the lab: `vmlab down {name}`, then `vmlab up {name}`"
    try:
        check_user(record.user, f"{where} user")
        check_word(record.instance_id, f"{where} instance id")
        check_word(record.provider, f"{where} provider")
        check_text(record.key_file, f"{where} key file")
        if record.key_file or record.host_key:  # a lab reached without SSH (a container) records neither
            check_public_key(record.host_key, f"{where} pinned host key")
        check_port(record.port, f"{where} SSH port")
        if record.host is not None:
            check_host(record.host, f"{where} address")
        if record.region is not None:
            check_word(record.region, f"{where} region")
    except BadInput as exc:
        raise BadInput(exc.message, fix) from None
    return record
