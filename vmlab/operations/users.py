"""Accounts: User, AuthorizedKey, and the getent facts they plan from.

Example::

    recipe.step("lab user", users.User("lab", groups=("sudo",), shell="/bin/bash"))
    recipe.step("lab key", users.AuthorizedKey("lab", Path("~/.ssh/id_ed25519.pub").expanduser().read_text()))
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from vmlab.engine.command import Command, RunResult
from vmlab.engine.facts import Fact, Facts, FileStat, FileText
from vmlab.engine.operation import Operation, unified_diff
from vmlab.errors import BadInput
from vmlab.operations._write import (
    check_account,
    check_path,
    check_strings,
    chown_spec,
    fix_attrs,
    is_pending,
    write_file,
)
from vmlab.operations.files import ensure_line

# ---- facts ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    """One line of `getent passwd`."""

    name: str
    uid: int
    gid: int
    home: str
    shell: str


@dataclass(frozen=True)
class PasswdEntry(Fact["Account | None"]):
    """The passwd entry of a user, or None when there is no such user."""

    name: str

    def command(self) -> Command:
        return Command("getent", "passwd", self.name, ok_codes=(0, 2))  # 2: no such key

    def parse(self, result: RunResult) -> Account | None:
        for line in result.stdout.splitlines():
            fields = line.split(":")
            if len(fields) == 7 and fields[0] == self.name:
                return Account(fields[0], int(fields[2]), int(fields[3]), fields[5], fields[6])
        return None


@dataclass(frozen=True)
class GroupEntry:
    """One line of `getent group`."""

    gid: int
    members: tuple[str, ...]


@dataclass(frozen=True)
class GroupTable(Fact["dict[str, GroupEntry]"]):
    """Every group with its gid and supplementary members."""

    def command(self) -> Command:
        return Command("getent", "group")

    def parse(self, result: RunResult) -> dict[str, GroupEntry]:
        out: dict[str, GroupEntry] = {}
        for line in result.stdout.splitlines():
            fields = line.split(":")
            if len(fields) == 4 and fields[2].isdigit():
                members = tuple(m for m in fields[3].split(",") if m)
                out.setdefault(fields[0], GroupEntry(int(fields[2]), members))
        return out


def _group_name(table: dict[str, GroupEntry], gid: int) -> str | None:
    return next((name for name, entry in table.items() if entry.gid == gid), None)


# ---- operations -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class User(Operation):
    """A local user (made with `useradd`, adjusted with `usermod`) or no such user (`userdel`, home kept).

    `groups` are supplementary groups the user must be in; other memberships are left alone. A changed
    `home` is moved (`usermod --move-home`). A new normal user gets a home directory; a `system` user only
    when `home` is given. Example::

        users.User("lab", groups=("sudo", "docker"), shell="/bin/bash")
        users.User("jupyter", system=True, home="/var/lib/jupyter", shell="/usr/sbin/nologin")
    """

    name: str
    groups: tuple[str, ...] = ()
    shell: str | None = None
    home: str | None = None
    system: bool = False
    present: bool = True

    def __post_init__(self) -> None:
        check_account(self, "name", optional=False)
        for group in check_strings(self, "groups", "group names", allow_empty=True):
            if not is_pending(group) and not _NAME.fullmatch(group):
                raise BadInput(f"User: group {group!r} is not a valid group name",
                               "use letters, digits, '_', '.' and '-'")
        check_path(self, "shell", optional=True)
        check_path(self, "home", optional=True)

    def plan(self, facts: Facts) -> Iterator[Command]:
        account = facts.get(PasswdEntry(self.name))
        if not self.present:
            if account is not None:
                yield Command("userdel", self.name)
            return
        if account is None:
            yield Command("useradd", *self._new_options(), self.name)
            return
        options: list[str] = []
        if self.shell and account.shell != self.shell:
            options += ["--shell", self.shell]
        if self.home and account.home.rstrip("/") != self.home.rstrip("/"):
            options += ["--home", self.home, "--move-home"]
        if self.groups:
            table = facts.get(GroupTable())
            primary = _group_name(table, account.gid)
            missing = [g for g in dict.fromkeys(self.groups)
                       if g != primary and (g not in table or self.name not in table[g].members)]
            if missing:
                options += ["--append", "--groups", ",".join(missing)]
        if options:
            yield Command("usermod", *options, self.name)

    def _new_options(self) -> list[str]:
        options = ["--system"] if self.system else []
        if self.home:
            options += ["--home-dir", self.home]
        if self.home or not self.system:
            options.append("--create-home")
        if self.shell:
            options += ["--shell", self.shell]
        if self.groups:
            options += ["--groups", ",".join(dict.fromkeys(self.groups))]
        return options


_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\$?")
_KEY_TYPE = re.compile(r"(ssh-(rsa|dss|ed25519)|ecdsa-sha2-nistp\d+|sk-[a-z0-9@.-]+)")


def key_id(line: str) -> tuple[str, str] | None:
    """(type, base64 body) of an authorized_keys line, whatever its options and comment; None if none."""
    tokens = line.split()
    for i, token in enumerate(tokens[:-1]):
        if _KEY_TYPE.fullmatch(token):
            return token, tokens[i + 1]
    return None


@dataclass(frozen=True)
class AuthorizedKey(Operation):
    """A public key in ~USER/.ssh/authorized_keys (or removed from it), with sshd's 0700/0600 and ownership.

    A line with the same key but another comment or options is replaced, not duplicated. Example::

        users.AuthorizedKey("lab", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI... me@laptop")

    The home directory comes from `getent passwd`; a user that does not exist yet (check mode, when an earlier
    step creates it) is assumed to live in /home/USER with a group named after it.
    """

    user: str
    key: str
    present: bool = True

    def __post_init__(self) -> None:
        check_account(self, "user", optional=False)
        if not isinstance(self.key, str):
            raise BadInput(f"AuthorizedKey: key must be text, got {type(self.key).__name__}",
                           "pass the contents of a .pub file")
        key = self.key.strip()
        object.__setattr__(self, "key", key)
        if not is_pending(key) and ("\n" in key or key_id(key) is None):
            raise BadInput(f"AuthorizedKey: {key[:40]!r}... is not one public key line",
                           "pass one line such as 'ssh-ed25519 AAAA... me@laptop' (the .pub file's text)")

    def _where(self, facts: Facts) -> tuple[str, str]:
        """(path of authorized_keys, owning group)."""
        account = facts.get(PasswdEntry(self.user))
        if account is None:
            return f"/home/{self.user}/.ssh/authorized_keys", self.user
        group = _group_name(facts.get(GroupTable()), account.gid) or str(account.gid)
        return f"{account.home.rstrip('/')}/.ssh/authorized_keys", group

    def _edit(self, facts: Facts, path: str) -> tuple[str | None, str | None]:
        wanted = key_id(self.key)
        old = facts.get(FileText(path))
        return old, ensure_line(old, self.key, lambda line: key_id(line) == wanted, self.present)

    def plan(self, facts: Facts) -> Iterator[Command]:
        path, group = self._where(facts)
        old, new = self._edit(facts, path)
        if not self.present:
            if new is not None:
                yield write_file(path, content=new.encode(), label=f"remove a key from {path}")
            return
        folder = path.rsplit("/", 1)[0]
        st = facts.get(FileStat(folder))
        if st is None:
            yield Command("mkdir", "-m", "0700", folder)
            yield Command("chown", chown_spec(self.user, group), folder)
        elif st.kind != "directory":
            raise BadInput(f"{folder} on the host is a {st.kind}, not a directory", "remove it first")
        else:
            yield from fix_attrs(folder, st, "0700", self.user, group)
        if new is not None:
            yield write_file(path, content=new.encode(), mode="0600", owner=self.user, group=group,
                             label=f"add a key to {path}")
        else:
            current = facts.get(FileStat(path))
            if current is not None:
                yield from fix_attrs(path, current, "0600", self.user, group)

    def diff(self, facts: Facts) -> str | None:
        path, _ = self._where(facts)
        old, new = self._edit(facts, path)
        return None if new is None else unified_diff(old, new, path)


__all__ = ["Account", "AuthorizedKey", "GroupEntry", "GroupTable", "PasswdEntry", "User", "key_id"]
