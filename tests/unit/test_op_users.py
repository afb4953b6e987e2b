"""users operations: plans from getent facts, bad arguments, real getent output."""

from __future__ import annotations

import hashlib

import pytest
from planning import argvs, diff, plan, read_fact

from vmlab.engine.command import RunResult
from vmlab.engine.facts import FileStat, FileText, PathInfo
from vmlab.errors import BadInput
from vmlab.operations._write import WRITE_SCRIPT
from vmlab.operations.users import (
    Account,
    AuthorizedKey,
    GroupEntry,
    GroupTable,
    PasswdEntry,
    User,
    key_id,
)

# real `getent passwd lab` / `getent group` lines (Ubuntu 24.04 cloud image, trimmed)
PASSWD_LINE = "lab:x:1001:1001:Lab User,,,:/home/lab:/bin/bash\n"
GROUP_OUT = ("root:x:0:\nadm:x:4:syslog,ubuntu\nsudo:x:27:ubuntu\ndocker:x:999:lab\nlab:x:1001:\n"
             "ubuntu:x:1000:\n")
LAB = Account("lab", 1001, 1001, "/home/lab", "/bin/bash")
GROUPS = GroupTable().parse(RunResult(0, GROUP_OUT, ""))


def test_getent_facts_parse_real_output() -> None:
    fact = PasswdEntry("lab")
    assert fact.command().argv == ("getent", "passwd", "lab") and 2 in fact.command().ok_codes
    assert fact.parse(RunResult(0, PASSWD_LINE, "")) == LAB
    assert fact.parse(RunResult(2, "", "")) is None
    assert GROUPS["adm"] == GroupEntry(4, ("syslog", "ubuntu"))
    assert GROUPS["lab"] == GroupEntry(1001, ())
    assert GroupTable().command().argv == ("getent", "group")


@pytest.mark.parametrize("op, account, expected", [
    (User("lab"), None, [("useradd", "--create-home", "lab")]),
    (User("lab", groups=("sudo", "docker"), shell="/bin/bash", home="/srv/lab"), None,
     [("useradd", "--home-dir", "/srv/lab", "--create-home", "--shell", "/bin/bash",
       "--groups", "sudo,docker", "lab")]),
    (User("jupyter", system=True, shell="/usr/sbin/nologin"), None,
     [("useradd", "--system", "--shell", "/usr/sbin/nologin", "jupyter")]),
    (User("jupyter", system=True, home="/var/lib/jupyter"), None,
     [("useradd", "--system", "--home-dir", "/var/lib/jupyter", "--create-home", "jupyter")]),
    (User("lab"), LAB, []),
    (User("lab", groups=("docker", "lab"), shell="/bin/bash", home="/home/lab/"), LAB, []),
    (User("lab", shell="/bin/zsh"), LAB, [("usermod", "--shell", "/bin/zsh", "lab")]),
    (User("lab", home="/srv/lab"), LAB, [("usermod", "--home", "/srv/lab", "--move-home", "lab")]),
    (User("lab", groups=("docker", "sudo", "adm", "sudo")), LAB,
     [("usermod", "--append", "--groups", "sudo,adm", "lab")]),
    (User("lab", groups=("nosuchgroup",)), LAB, [("usermod", "--append", "--groups", "nosuchgroup", "lab")]),
    (User("lab", shell="/bin/sh", groups=("sudo",)), LAB,
     [("usermod", "--shell", "/bin/sh", "--append", "--groups", "sudo", "lab")]),
    (User("lab", present=False), LAB, [("userdel", "lab")]),
    (User("lab", present=False), None, []),
])
def test_user_plans(op, account, expected) -> None:
    assert argvs(op, {PasswdEntry(op.name): account, GroupTable(): GROUPS}) == expected


@pytest.mark.parametrize("make, message", [
    (lambda: User(""), "is not a valid user or group name"),
    (lambda: User("-o"), "is not a valid user or group name"),
    (lambda: User("a:b"), "is not a valid user or group name"),
    (lambda: User("lab", groups="sudo"), "must be a tuple"),
    (lambda: User("lab", groups=("su do",)), "is not a valid group name"),
    (lambda: User("lab", shell="bash"), "is not an absolute path"),
    (lambda: User("lab", home="home/lab"), "is not an absolute path"),
    (lambda: AuthorizedKey("lab", "not a key"), "is not one public key line"),
    (lambda: AuthorizedKey("lab", KEY + "\n" + KEY2), "is not one public key line"),
    (lambda: AuthorizedKey("lab", b"ssh-ed25519 AAAA"), "must be text"),
    (lambda: AuthorizedKey("l b", KEY), "is not a valid user or group name"),
])
def test_bad_arguments(make, message) -> None:
    with pytest.raises(BadInput, match=message):
        make()


# ---- AuthorizedKey -----------------------------------------------------------------------------------------

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGcZ4B3l6m0m3tKJ3XxW0nK7zq8xk0m2p5b3v6w9y1zQ me@laptop"
KEY2 = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 other@host"
SSH = "/home/lab/.ssh"
AK = "/home/lab/.ssh/authorized_keys"
DIR_OK = PathInfo("directory", "0700", "lab", "lab", 4096)


def keys_file(text: str, mode: str = "0600", owner: str = "lab") -> PathInfo:
    return PathInfo("file", mode, owner, "lab", len(text), hashlib.sha256(text.encode()).hexdigest())


def write(mode: str = "0600", owner: str = "lab:lab") -> tuple[str, ...]:
    return ("sh", "-c", WRITE_SCRIPT, "sh", AK, mode, owner, "")


def facts(text: str | None, folder: PathInfo | None = DIR_OK, account: Account | None = LAB) -> dict:
    return {PasswdEntry("lab"): account, GroupTable(): GROUPS, FileText(AK): text, FileStat(SSH): folder,
            FileStat(AK): None if text is None else keys_file(text)}


@pytest.mark.parametrize("op, current, expected", [
    (AuthorizedKey("lab", KEY + "\n"), facts(KEY2 + "\n" + KEY + "\n"), []),
    (AuthorizedKey("lab", KEY), facts(None, None),
     [("mkdir", "-m", "0700", SSH), ("chown", "lab:lab", SSH), write()]),
    (AuthorizedKey("lab", KEY), facts(KEY2 + "\n"), [write()]),
    (AuthorizedKey("lab", KEY), facts(KEY + "\n", PathInfo("directory", "0755", "root", "root", 0)),
     [("chown", "lab:lab", SSH), ("chmod", "0700", SSH)]),
    (AuthorizedKey("lab", KEY), {**facts(KEY + "\n"), FileStat(AK): keys_file(KEY + "\n", "0644")},
     [("chmod", "0600", AK)]),
    (AuthorizedKey("lab", KEY, present=False), facts(KEY2 + "\n" + KEY + "\n"),
     [("sh", "-c", WRITE_SCRIPT, "sh", AK, "", "", "")]),
    (AuthorizedKey("lab", KEY, present=False), facts(KEY2 + "\n"), []),
    (AuthorizedKey("lab", KEY, present=False), facts(None, None), []),
    # the user is made by an earlier step (check mode): assume /home/lab and group lab
    (AuthorizedKey("lab", KEY), facts(None, None, account=None),
     [("mkdir", "-m", "0700", SSH), ("chown", "lab:lab", SSH), write()]),
])
def test_authorized_key_plans(op, current, expected) -> None:
    assert argvs(op, current) == expected


def test_authorized_key_replaces_the_same_key_with_another_comment() -> None:
    old = 'from="10.0.0.0/8" ' + KEY.replace("me@laptop", "old comment") + "\n" + KEY2 + "\n"
    op = AuthorizedKey("lab", KEY)
    [command] = plan(op, facts(old))
    assert command.stdin == (KEY + "\n" + KEY2 + "\n").encode()
    assert "+" + KEY in diff(op, facts(old))
    [removal] = plan(AuthorizedKey("lab", KEY, present=False), facts(old))
    assert removal.stdin == (KEY2 + "\n").encode()


def test_key_id() -> None:
    assert key_id(KEY) == ("ssh-ed25519", KEY.split()[1])
    assert key_id('command="echo hi" ' + KEY2) == ("ssh-rsa", "AAAAB3NzaC1yc2EAAAADAQABAAABAQC7")
    assert key_id("# a comment") is None


def test_getent_facts_on_this_machine() -> None:
    root = read_fact(PasswdEntry("root"))
    assert root is not None and root.uid == 0 and root.home.startswith("/")
    assert read_fact(PasswdEntry("vmlab-no-such-user")) is None
    assert read_fact(GroupTable())["root"].gid == 0
