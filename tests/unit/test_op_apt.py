"""apt operations: plans from dpkg/apt facts, bad arguments, and the facts parsed from real output."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from planning import argvs, diff, read_fact

from vmlab.engine.command import RunResult
from vmlab.engine.facts import FileStat, FileText, PathInfo, Which
from vmlab.errors import BadInput
from vmlab.operations._write import WRITE_SCRIPT
from vmlab.operations.apt import UPDATE_SCRIPT, AptListsAge, DpkgInstalled, Packages, Repository, UpdateCache

ENV = ("env", "DEBIAN_FRONTEND=noninteractive")
INSTALL = (*ENV, "apt-get", "install", "-y", "--no-install-recommends",
           "-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold",
           "-o", "APT::Keep-Downloaded-Packages=false")  # no .deb left behind for the scrub to delete
PURGE = (*ENV, "apt-get", "purge", "-y")
UPDATE = ("sh", "-c", UPDATE_SCRIPT, "sh", "/var/lib/apt/periodic/update-success-stamp")

# real `dpkg-query -W -f '${Package}\t${Architecture}\t${Version}\t${Status}\n' ...` output (Debian 12)
DPKG_OUT = (
    "curl\tamd64\t7.88.1-10+deb12u14\tinstall ok installed\n"
    "libc6\tamd64\t2.36-9+deb12u14\tinstall ok installed\n"
    "libc6\ti386\t2.36-9+deb12u14\tinstall ok installed\n"
    "nginx\tamd64\t1.22.1-9\tdeinstall ok config-files\n"
    "vim\t\t\tunknown ok not-installed\n"
)


def test_dpkg_fact_parses_real_output() -> None:
    fact = DpkgInstalled(("curl", "libc6", "nginx", "vim", "git"))
    assert fact.command().argv == ("dpkg-query", "-W", "-f",
                                   "${Package}\\t${Architecture}\\t${Version}\\t${Status}\\n",
                                   "curl", "libc6", "nginx", "vim", "git")
    assert 1 in fact.command().ok_codes  # "no packages found matching git"
    assert fact.parse(RunResult(1, DPKG_OUT, "dpkg-query: no packages found matching git\n")) == {
        "curl": "7.88.1-10+deb12u14", "curl:amd64": "7.88.1-10+deb12u14",
        "libc6": "2.36-9+deb12u14", "libc6:amd64": "2.36-9+deb12u14", "libc6:i386": "2.36-9+deb12u14"}


INSTALLED = {"curl": "7.88.1-10", "curl:amd64": "7.88.1-10", "libc6": "2.36-9", "libc6:amd64": "2.36-9"}


@pytest.mark.parametrize("op, query, expected", [
    (Packages(("curl",)), ("curl",), []),
    (Packages(("curl", "git", "curl", "jq")), ("curl", "git", "jq"), [(*INSTALL, "git", "jq")]),
    (Packages(["libc6:amd64", "libc6:i386"]), ("libc6:amd64", "libc6:i386"), [(*INSTALL, "libc6:i386")]),
    (Packages(("curl=7.88.1-10",)), ("curl",), []),
    (Packages(("curl=7.88.1-11",)), ("curl",), [(*INSTALL, "curl=7.88.1-11")]),
    (Packages(("git", "curl"), present=False), ("git", "curl"), [(*PURGE, "curl")]),
    (Packages(("git",), present=False), ("git",), []),
])
def test_packages_plans(op, query, expected) -> None:
    assert argvs(op, {DpkgInstalled(query): INSTALLED}) == expected


UNSAFE_IO = ("-o", "Dpkg::Options::=--force-unsafe-io")
NO_TRANSLATIONS = ("-o", "Acquire::Languages=none")


def test_a_bakes_builder_gets_dpkg_without_fsync_and_lists_without_translations() -> None:
    """On a throwaway builder (a bake) dpkg skips its per-file fsync and apt fetches no translations; a host that
    `vmlab provision` configures keeps both (the plans above)."""
    facts = {DpkgInstalled(("curl", "git")): INSTALLED}
    assert argvs(Packages(("curl", "git")), facts, throwaway=True) == [(*INSTALL[:-2], *UNSAFE_IO, *INSTALL[-2:],
                                                                        "git")]
    assert argvs(Packages(("curl", "git"), present=False), facts, throwaway=True) == [(*PURGE, *UNSAFE_IO, "curl")]
    assert argvs(Packages(("curl",)), {DpkgInstalled(("curl",)): INSTALLED}, throwaway=True) == []
    assert argvs(UpdateCache(), {AptListsAge(): None}, throwaway=True) == [(*UPDATE, *NO_TRANSLATIONS)]
    assert argvs(UpdateCache(), {AptListsAge(): 60}, throwaway=True) == []
    facts = {FileStat(REPO.key_path): f(KEY_SHA), FileStat(REPO.list_path): f("old")}
    assert argvs(REPO, facts, throwaway=True)[-1] == (*UPDATE, *NO_TRANSLATIONS)
    for command in (c for op in (Packages(("git",)), UpdateCache()) for c in argvs(
            op, {DpkgInstalled(("git",)): {}, AptListsAge(): None})):
        assert UNSAFE_IO[1] not in command and NO_TRANSLATIONS[1] not in command


def test_update_script_passes_its_options_to_apt_get_and_stamps(tmp_path: Path) -> None:
    """The update script for real, with a stand-in apt-get on PATH: the options reach it before `update`, and the
    stamp is touched only when it succeeds."""
    if not Path("/var/lib/apt/periodic").is_dir():
        pytest.skip("needs apt's /var/lib/apt/periodic (the script makes it otherwise)")
    log = tmp_path / "log"
    for rc in (0, 100):
        (tmp_path / "apt-get").write_text(f'#!/bin/sh\necho "$*" > {log}\nexit {rc}\n')
        (tmp_path / "apt-get").chmod(0o755)
        stamp = tmp_path / f"stamp{rc}"
        done = subprocess.run(["sh", "-c", UPDATE_SCRIPT, "sh", str(stamp), *NO_TRANSLATIONS],
                              env={"PATH": f"{tmp_path}:/usr/bin:/bin"}, capture_output=True, timeout=30)
        assert log.read_text() == "-o Acquire::Languages=none update\n"
        assert (done.returncode == 0) == (rc == 0) and stamp.exists() == (rc == 0)


@pytest.mark.parametrize("make, message", [
    (lambda: Packages(()), "names is empty"),
    (lambda: Packages("curl"), r"write names=\('curl',\)"),
    (lambda: Packages(("Curl",)), "is not a Debian package name"),
    (lambda: Packages(("curl; rm -rf /",)), "is not a Debian package name"),
    (lambda: Packages(("-y",)), "is not a Debian package name"),
    (lambda: Packages(("curl=1.0",), present=False), "version pin"),
    (lambda: UpdateCache(max_age=-1), "not a number of seconds"),
    (lambda: UpdateCache(max_age="1h"), "not a number of seconds"),
])
def test_bad_arguments(make, message) -> None:
    with pytest.raises(BadInput, match=message):
        make()


@pytest.mark.parametrize("op, age, expected", [
    (UpdateCache(), None, [UPDATE]),
    (UpdateCache(), 7200, [UPDATE]),
    (UpdateCache(), 60, []),
    (UpdateCache(max_age=86400), 7200, []),
    (UpdateCache(max_age=0), 0, [UPDATE]),
])
def test_update_cache_plans(op, age, expected) -> None:
    assert argvs(op, {AptListsAge(): age}) == expected


@pytest.mark.parametrize("out, age", [("1700000100 1700000000 yes\n", 100),
                                      ("1700000100 1700000000 no\n", None),
                                      ("1700000100 1700000200 yes\n", 0)])
def test_lists_age_parses(out, age) -> None:
    assert AptListsAge().parse(RunResult(0, out, "")) == age


# ---- Repository --------------------------------------------------------------------------------------------

KEY_URL = "https://download.docker.com/linux/debian/gpg"
KEY = "/etc/apt/keyrings/docker.asc"
LIST = "/etc/apt/sources.list.d/docker.list"
LINE = f"deb [arch=amd64 signed-by={KEY}] https://download.docker.com/linux/debian bookworm stable\n"
LINE_SHA = hashlib.sha256(LINE.encode()).hexdigest()
KEY_SHA = "1500c1f56fa9e26b9b8f42452a553675796ade0807cdce11975eb98170b3a570"
REPO = Repository("docker", "https://download.docker.com/linux/debian", "bookworm", KEY_URL,
                  components=("stable",), key_sha256=KEY_SHA, arch="amd64")


def f(sha: str | None, mode: str = "0644") -> PathInfo:
    return PathInfo("file", mode, "root", "root", 1, sha)


def fetch_key(sha: str = "") -> tuple[str, ...]:
    return ("sh", "-c", WRITE_SCRIPT, "sh", KEY, "0644", "", sha, "curl", "-fsSL", "--retry", "3", KEY_URL)


WRITE_LIST = ("sh", "-c", WRITE_SCRIPT, "sh", LIST, "0644", "", "")
DIR = PathInfo("directory", "0755", "root", "root", 4096)


@pytest.mark.parametrize("op, key, keyrings, listing, expected", [
    (REPO, f(KEY_SHA), DIR, f(LINE_SHA), []),
    (REPO, None, DIR, None, [fetch_key(KEY_SHA), WRITE_LIST, UPDATE]),
    (REPO, None, None, f(LINE_SHA),
     [("mkdir", "-p", "-m", "0755", "/etc/apt/keyrings"), fetch_key(KEY_SHA), UPDATE]),
    (REPO, f(KEY_SHA), DIR, f("old"), [WRITE_LIST, UPDATE]),
    (REPO, f("y"), DIR, f(LINE_SHA), [fetch_key(KEY_SHA), UPDATE]),  # a key that is not the pinned one is replaced
])
def test_repository_plans(op, key, keyrings, listing, expected) -> None:
    facts = {FileStat(KEY): key, FileStat("/etc/apt/keyrings"): keyrings, FileStat(LIST): listing,
             Which("curl"): "/usr/bin/curl"}
    assert argvs(op, facts) == expected


def test_repository_source_line_and_diff() -> None:
    assert REPO.source_line() == LINE
    flat = Repository("local", "https://example.org/debs", "./", "https://example.org/key.gpg", components=(),
                      key_sha256=KEY_SHA)
    assert flat.source_line() == "deb [signed-by=/etc/apt/keyrings/local.gpg] https://example.org/debs ./\n"
    assert diff(REPO, {FileText(LIST): LINE}) is None
    assert diff(REPO, {FileText(LIST): None}).endswith("+" + LINE)


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "../etc"}, "name '../etc' is not valid"),
    ({"url": "/local/path"}, "is not an http"),
    ({"key_url": "gpg"}, "is not an http"),
    ({"suite": "a b"}, "suite 'a b' is not valid"),
    ({"components": "main"}, "must be a tuple"),
    ({"key_sha256": "abc"}, "is not a sha256"),
    ({"arch": "amd64 arm64"}, "arch 'amd64 arm64' is not valid"),
])
def test_repository_bad_arguments(kwargs, message) -> None:
    args = {"name": "docker", "url": "https://x.org/d", "suite": "stable", "key_url": "https://x.org/k",
            "key_sha256": KEY_SHA}
    with pytest.raises(BadInput, match=message):
        Repository(**{**args, **kwargs})


@pytest.mark.parametrize("key_url", ["https://x.org/k.asc", "http://x.org/k.gpg", "ftp://x.org/k"])
def test_repository_refuses_a_key_url_without_a_pin(key_url: str) -> None:
    with pytest.raises(BadInput) as err:
        Repository("docker", "https://x.org/d", "stable", key_url)
    assert f"key_url {key_url} has no key_sha256" in str(err.value) and "sha256sum" in str(err.value)
    assert "\n" not in str(err.value)


def test_repository_without_a_pin_stops_a_recipe_check_with_exit_2(tmp_path: Path) -> None:
    """The refusal comes when the recipe is loaded (`--check` included): one line, exit 2, no host touched."""
    recipe = tmp_path / "docker.py"
    recipe.write_text("from vmlab.engine import Recipe\nfrom vmlab.operations import apt\n"
                      "recipe = Recipe('docker')\n"
                      "recipe.step('repo', apt.Repository('docker', 'https://x.org/d', 'stable', 'https://x.org/k'))\n")
    inventory = tmp_path / "hosts.yaml"
    inventory.write_text("all:\n  hosts:\n    h1: {ansible_host: 127.0.0.1, ansible_port: 9}\n")
    done = subprocess.run([sys.executable, "-m", "vmlab", "provision", str(recipe), "-i", str(inventory),
                           "--check"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "has no key_sha256" in lines[0], done.stderr


def test_templated_pin_is_checked_once_rendered() -> None:
    op = Repository("docker", "https://x.org/d", "stable", "https://x.org/k", key_sha256="{{ pin }}")
    assert op.render({"pin": KEY_SHA}, "t").key_sha256 == KEY_SHA  # type: ignore[attr-defined]
    with pytest.raises(BadInput, match="is not a sha256"):
        op.render({"pin": ""}, "t")


# ---- the fact commands, read for real on this machine (read-only) ------------------------------------------

@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="needs dpkg")
def test_dpkg_fact_on_this_machine() -> None:
    installed = read_fact(DpkgInstalled(("dpkg", "vmlab-no-such-package")))
    assert "dpkg" in installed and not any(k.startswith("vmlab-") for k in installed)


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs apt")
def test_lists_age_fact_on_this_machine() -> None:
    age = read_fact(AptListsAge())
    assert age is None or age >= 0
