"""files operations: table tests of plans (incl. no change), bad arguments, the write command run for real."""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import shutil
import stat
from pathlib import Path

import pytest
from planning import apply_locally, argvs, diff, plan, read_fact, run_local

from vmlab.engine.facts import FileStat, FileText, PathInfo, Which
from vmlab.errors import BadInput
from vmlab.operations._write import WRITE_SCRIPT, write_file
from vmlab.operations.files import Copy, Directory, Download, File, Line, Template, ensure_line

P = "/srv/d"
F = "/etc/app.conf"
TEXT = "a = 1\n"
SHA = hashlib.sha256(TEXT.encode()).hexdigest()
OTHER = "0" * 64


def st(kind: str = "file", mode: str = "0644", owner: str = "root", group: str = "root",
       sha: str | None = None) -> PathInfo:
    return PathInfo(kind=kind, mode=mode, owner=owner, group=group, size=0, sha256=sha)


def write(path: str, mode: str = "", owner: str = "", sha: str = "", *fetch: str) -> tuple[str, ...]:
    return ("sh", "-c", WRITE_SCRIPT, "sh", path, mode, owner, sha, *fetch)


# ---- Directory ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("op, current, expected", [
    (Directory(P), None, [("mkdir", "-p", P)]),
    (Directory(P, mode="750", owner="lab", group="lab"), None,
     [("mkdir", "-p", "-m", "0750", P), ("chown", "lab:lab", P)]),
    (Directory(P, group="lab"), None, [("mkdir", "-p", P), ("chown", ":lab", P)]),
    (Directory(P), st("directory", "0700"), []),
    (Directory(P, mode="0755", owner="root", group="root"), st("directory", "0755"), []),
    (Directory(P, mode="0750"), st("directory", "0755"), [("chmod", "0750", P)]),
    (Directory(P, owner="lab"), st("directory"), [("chown", "lab", P)]),
    (Directory(P, owner="root", group="lab"), st("directory"), [("chown", ":lab", P)]),
    # chown clears set-id bits, so a set-gid mode is set again even when it was right
    (Directory(P, mode="2775", owner="lab"), st("directory", "2775"),
     [("chown", "lab", P), ("chmod", "2775", P)]),
    (Directory(P, mode="0700"), st("link", "0777"), []),
    (Directory(P, present=False), None, []),
    (Directory(P, present=False), st("directory"), [("rm", "-rf", P)]),
])
def test_directory_plans(op, current, expected) -> None:
    assert argvs(op, {FileStat(P): current}) == expected


@pytest.mark.parametrize("op", [Directory(P), Directory(P, present=False)])
def test_directory_refuses_a_file_in_the_way(op) -> None:
    with pytest.raises(BadInput, match="is a file, not a directory"):
        plan(op, {FileStat(P): st("file")})


# ---- File --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("op, current, expected", [
    (File(F, TEXT), None, [write(F)]),
    (File(F, TEXT, mode="0600", owner="lab", group="adm"), None, [write(F, "0600", "lab:adm")]),
    (File(F, TEXT), st(sha=SHA), []),
    (File(F, TEXT, mode="0644", owner="root", group="root"), st(sha=SHA), []),
    (File(F, TEXT, mode="0600"), st(sha=SHA), [("chmod", "0600", F)]),
    (File(F, TEXT, owner="lab"), st(sha=SHA), [("chown", "lab", F)]),
    (File(F, TEXT, mode="0600"), st(sha=OTHER), [write(F, "0600")]),
    (File(F, TEXT), st("link", "0777"), [write(F)]),
    (File(F), None, [write(F)]),
    (File(F), st(sha=OTHER), []),
    (File(F, mode="0640"), st(sha=OTHER), [("chmod", "0640", F)]),
    (File(F, present=False), None, []),
    (File(F, present=False), st(sha=SHA), [("rm", "-f", F)]),
])
def test_file_plans(op, current, expected) -> None:
    assert argvs(op, {FileStat(F): current}) == expected


def test_file_content_travels_on_stdin_and_is_raw() -> None:
    op = File(F, "x = {{ not_a_var }}\n").render({}, "test")
    [command] = plan(op, {FileStat(F): None})
    assert command.stdin == b"x = {{ not_a_var }}\n"
    assert "not_a_var" not in " ".join(command.argv)
    assert command.describe() == f"write {F} (20 bytes)"


def test_file_refuses_a_directory_in_the_way() -> None:
    with pytest.raises(BadInput, match="is a directory, not a file"):
        plan(File(F, TEXT), {FileStat(F): st("directory")})


def test_file_diff() -> None:
    assert diff(File(F, "a = 2\n"), {FileText(F): TEXT}) == (
        f"--- {F} (current)\n+++ {F} (desired)\n@@ -1 +1 @@\n-a = 1\n+a = 2\n")
    assert diff(File(F, TEXT), {FileText(F): TEXT}) is None
    assert diff(File(F, TEXT), {FileText(F): None}).startswith("--- /dev/null")
    assert diff(File(F, present=False), {FileText(F): TEXT}).endswith("-a = 1\n")


@pytest.mark.parametrize("make, message", [
    (lambda: File("etc/app.conf", TEXT), "is not an absolute path"),
    (lambda: File(F, TEXT, mode="0999"), "is not an octal mode"),
    (lambda: File(F, TEXT, mode="rw-r--r--"), "is not an octal mode"),
    (lambda: File(F, TEXT, mode=0o644), 'is a number: write it as an octal string, e.g. "0644"'),
    (lambda: File(F, TEXT, owner="-R"), "is not a valid user or group name"),
    (lambda: File(F, TEXT, group="a b"), "is not a valid user or group name"),
    (lambda: File(F, b"bytes"), "content must be text"),
    (lambda: Directory("relative"), "is not an absolute path"),
    (lambda: Directory("/", present=False), "refusing to remove /"),
    (lambda: Template(F), "exactly one of source"),
    (lambda: Template(F, source="x", src="x.j2"), "exactly one of source"),
    (lambda: Line(F, "two\nlines"), "single line"),
    (lambda: Line(F, "x", regexp="(unclosed"), "not a valid regular expression"),
    (lambda: Download("ftp:/nope", F, OTHER), "is not an http"),
    (lambda: Download("https://example.org/x", F, "abc"), "is not a sha256"),
    (lambda: Copy("", F), "must be a local file path"),
])
def test_bad_arguments(make, message) -> None:
    with pytest.raises(BadInput, match=message.replace("(", r"\(")):
        make()


def test_modes_are_normalised_and_templates_checked_after_rendering() -> None:
    assert File(F, mode="644").mode == "0644"
    op = File("{{ dir }}/x", mode="{{ m }}")  # not checkable yet
    assert op.render({"dir": "/opt", "m": "600"}, "t") == File("/opt/x", mode="0600")
    with pytest.raises(BadInput, match="not an absolute path"):
        op.render({"dir": "opt", "m": "600"}, "t")


# ---- Template ----------------------------------------------------------------------------------------------

def test_template_renders_source_then_writes_like_file() -> None:
    op = Template(F, source="a = {{ n }}\n", mode="0600").render({"n": 1}, "t")
    assert argvs(op, {FileStat(F): st(mode="0600", sha=SHA)}) == []
    [command] = plan(op, {FileStat(F): None})
    assert command.argv == write(F, "0600") and command.stdin == TEXT.encode()


def test_template_reads_src_when_rendered(tmp_path: Path) -> None:
    src = tmp_path / "app.conf.j2"
    src.write_text("a = {{ n }}\n")
    op = Template(F, src=src).render({"n": 1}, "t")
    assert op.source == TEXT and op.src is None
    assert diff(op, {FileText(F): "a = 0\n"}).endswith("-a = 0\n+a = 1\n")


def test_template_errors_are_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="cannot read local file"):
        Template(F, src=str(tmp_path / "missing.j2")).render({}, "t")
    with pytest.raises(BadInput, match="'n' is undefined"):
        Template(F, source="{{ n }}").render({}, "t")


# ---- Line --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, line, regexp, present, expected", [
    (None, "b", None, True, "b\n"),
    ("", "b", None, True, "b\n"),
    ("a\n", "b", None, True, "a\nb\n"),
    ("a", "b", None, True, "a\nb\n"),
    ("a\nb\n", "b", None, True, None),
    ("#Port 22\nPort 22\nx\n", "Port 2222", r"^#?Port\b", True, "#Port 22\nPort 2222\nx\n"),
    ("Port 2222\n", "Port 2222", r"^Port\b", True, None),
    ("x\n", "Port 2222", r"^Port\b", True, "x\nPort 2222\n"),
    ("Port 2222\n#Port 1\n", "Port 2222", r"^Nope", True, None),
    (None, "b", None, False, None),
    ("a\nb\nb\n", "b", None, False, "a\n"),
    ("a\n", "b", None, False, None),
    ("Port 1\nx\nPort 2\n", "", r"^Port\b", False, "x\n"),
])
def test_ensure_line(text, line, regexp, present, expected) -> None:
    import re

    matches = re.compile(regexp).search if regexp else None
    assert ensure_line(text, line, matches, present) == expected


def test_line_plans_a_whole_file_write_and_a_diff() -> None:
    op = Line(F, "Port 2222", regexp=r"^#?Port ")
    facts = {FileText(F): "#Port 22\n"}
    [command] = plan(op, facts)
    assert command.argv == write(F) and command.stdin == b"Port 2222\n"
    assert diff(op, facts).endswith("-#Port 22\n+Port 2222\n")
    assert plan(op, {FileText(F): "Port 2222\n"}) == []
    assert diff(op, {FileText(F): "Port 2222\n"}) is None


# ---- Copy --------------------------------------------------------------------------------------------------

def test_copy_sends_the_local_bytes(tmp_path: Path) -> None:
    src = tmp_path / "logo.png"
    data = b"\x89PNG\r\n\x00\xff"
    src.write_bytes(data)
    op = Copy(src, "/srv/logo.png", mode="0644")
    [command] = plan(op, {FileStat("/srv/logo.png"): None})
    assert command.argv == write("/srv/logo.png", "0644") and command.stdin == data
    same = st(sha=hashlib.sha256(data).hexdigest())
    assert plan(op, {FileStat("/srv/logo.png"): same}) == []
    assert diff(op, {FileStat("/srv/logo.png"): None}) == "binary file /srv/logo.png would change\n"
    with pytest.raises(BadInput, match="cannot read local file"):
        plan(Copy(str(tmp_path / "nope"), "/srv/x"), {})


# ---- Download ----------------------------------------------------------------------------------------------

URL = "https://example.org/tool.tgz"
D = "/opt/tool.tgz"
CURL = {Which("curl"): "/usr/bin/curl"}
WGET = {Which("curl"): None, Which("wget"): "/usr/bin/wget"}


@pytest.mark.parametrize("op, current, tools, expected", [
    (Download(URL, D, SHA), None, CURL, [write(D, "", "", SHA, "curl", "-fsSL", "--retry", "3", URL)]),
    (Download(URL, D, SHA.upper(), mode="0755"), st(sha=OTHER), WGET,
     [write(D, "0755", "", SHA, "wget", "-q", "-O", "-", URL)]),
    (Download(URL, D, SHA), st(sha=SHA), {}, []),
    (Download(URL, D, SHA, mode="0755", owner="lab"), st(sha=SHA), {},
     [("chown", "lab", D), ("chmod", "0755", D)]),
])
def test_download_plans(op, current, tools, expected) -> None:
    assert argvs(op, {FileStat(D): current, **tools}) == expected


def test_download_without_curl_or_wget_says_what_to_install() -> None:
    with pytest.raises(BadInput, match="neither curl nor wget"):
        plan(Download(URL, D, SHA), {FileStat(D): None, Which("curl"): None, Which("wget"): None})


# ---- the commands, run for real on this machine (under tmp_path) -------------------------------------------

def test_filestat_and_filetext_facts_read_this_machine(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text(TEXT)
    path.chmod(0o640)
    info = read_fact(FileStat(str(path)))
    assert (info.kind, info.mode, info.sha256, info.size) == ("file", "0640", SHA, len(TEXT))
    assert read_fact(FileStat(str(tmp_path))).kind == "directory"
    assert read_fact(FileStat(str(tmp_path / "missing"))) is None
    assert read_fact(FileText(str(path))) == TEXT


def _mode(path: Path) -> str:
    return f"{stat.S_IMODE(path.stat().st_mode):04o}"


def test_write_command_creates_replaces_and_keeps_attributes(tmp_path: Path) -> None:
    path = tmp_path / "dir with space" / "it's.conf"
    path.parent.mkdir()
    assert run_local(write_file(str(path), content=b"one\n")).rc == 0
    assert path.read_text() == "one\n" and _mode(path) == "0644"
    path.chmod(0o600)
    assert run_local(write_file(str(path), content=b"two\n")).rc == 0
    assert path.read_text() == "two\n" and _mode(path) == "0600"  # mode of the replaced file is kept
    assert run_local(write_file(str(path), content=b"", mode="0640")).rc == 0
    assert path.read_text() == "" and _mode(path) == "0640"
    assert os.listdir(path.parent) == [path.name]  # no temporary file left behind


def test_write_command_checks_the_sha256_before_replacing(tmp_path: Path) -> None:
    source = tmp_path / "download"
    source.write_text(TEXT)
    dest = tmp_path / "dest"
    dest.write_text("old\n")
    bad = run_local(write_file(str(dest), fetch=("cat", str(source)), sha256=OTHER))
    assert bad.rc == 1 and f"expected {OTHER}" in bad.stderr
    assert dest.read_text() == "old\n" and sorted(os.listdir(tmp_path)) == ["dest", "download"]
    curl = ("curl", "-fsSL", "--retry", "3", source.as_uri())
    fetch = curl if shutil.which("curl") else ("cat", str(source))
    good = run_local(write_file(str(dest), fetch=fetch, sha256=SHA, mode="0755"))
    assert good.rc == 0, good.stderr
    assert dest.read_text() == TEXT and _mode(dest) == "0755"


def test_each_operation_applied_locally_converges(tmp_path: Path) -> None:
    """Apply twice against this machine (confined to tmp_path): the second run plans nothing."""
    me = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    d = tmp_path / "srv" / "data"
    local = tmp_path / "logo.bin"
    local.write_bytes(b"\x00\xffdata")
    src = tmp_path / "t.j2"
    src.write_text("name = {{ name }}\n")
    ops = [
        Directory(str(d), mode="2750", owner=me, group=group),
        File(str(d / "app.conf"), TEXT, mode="0600", owner=me),
        File(str(d / "app.conf"), mode="0640"),
        Line(str(d / "app.conf"), "b = 2", regexp=r"^#?b\b"),
        Line(str(d / "app.conf"), "a = 1", present=False),
        Template(str(d / "t.conf"), src=str(src)).render({"name": "lab"}, "t"),
        Copy(str(local), str(d / "logo.bin"), mode="0444"),
        File(str(d / "gone"), "x"),
        File(str(d / "gone"), present=False),
        Directory(str(tmp_path / "srv"), present=False),
    ]
    for op in ops:
        assert apply_locally(op), f"{op} planned nothing on the first run"
        assert apply_locally(op) == [], f"{op} is not idempotent"
        if op == ops[4]:
            assert (d / "app.conf").read_text() == "b = 2\n" and _mode(d / "app.conf") == "0640"
            assert _mode(d) == "2750"
    assert not (tmp_path / "srv").exists()
