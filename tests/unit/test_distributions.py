"""What debootstrap and apt are told for each distribution (vmlab/providers/debian.py, ubuntu.py), and the pinned
keyring package (keyrings.py) fetched from a real HTTP server on 127.0.0.1: used when it matches its pin,
refused (and not kept) when it does not, reused from the cache without the network."""

from __future__ import annotations

import hashlib
import http.server
import shutil
import subprocess
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from vmlab.errors import BadInput, HostError
from vmlab.providers import debian
from vmlab.providers.debian import DEBIAN_12
from vmlab.providers.keyrings import PinnedKeyring
from vmlab.providers.ubuntu import UBUNTU_24_04, UBUNTU_KEYRING

POOL = "pool/main/t/test-keyring/test-keyring_1_all.deb"
MEMBER = "usr/share/keyrings/test-archive-keyring.gpg"


def test_debian_argv_and_sources(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("VMLAB_DEBIAN_MIRROR", raising=False)
    monkeypatch.delenv("VMLAB_DEBIAN_KEYRING", raising=False)
    keys = DEBIAN_12.keyring(tmp_path)
    assert keys == Path("/usr/share/keyrings/debian-archive-keyring.gpg")
    assert DEBIAN_12.debootstrap_argv(Path("/r"), DEBIAN_12.mirror(), keys, ("a", "b")) == [
        "debootstrap", "--variant=minbase", f"--keyring={keys}", "--force-check-gpg", "--include=a,b", "bookworm",
        "/r", "http://deb.debian.org/debian"]
    assert DEBIAN_12.apt_sources("http://deb.debian.org/debian") == (
        "deb http://deb.debian.org/debian bookworm main\n"
        "deb http://deb.debian.org/debian bookworm-updates main\n"
        "deb http://deb.debian.org/debian-security bookworm-security main\n")
    # another mirror rarely carries Debian's security archive: it is not named then
    assert "security" not in DEBIAN_12.apt_sources("http://mirror.example/debian")


def test_ubuntu_argv_and_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VMLAB_UBUNTU_MIRROR", raising=False)
    argv = UBUNTU_24_04.debootstrap_argv(Path("/r"), UBUNTU_24_04.mirror(), Path("/k.gpg"), ("systemd-sysv",))
    assert argv == ["debootstrap", "--variant=minbase", "--keyring=/k.gpg", "--force-check-gpg",
                    "--components=main,universe", "--include=systemd-sysv", "noble", "/r",
                    "http://archive.ubuntu.com/ubuntu", "/usr/share/debootstrap/scripts/gutsy"]
    for url in ("http://archive.ubuntu.com/ubuntu", "http://mirror.example/ubuntu"):
        assert UBUNTU_24_04.apt_sources(url) == (f"deb {url} noble main universe\n"
                                                 f"deb {url} noble-updates main universe\n"
                                                 f"deb {url} noble-security main universe\n")


def test_ubuntu_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VMLAB_UBUNTU_MIRROR", "http://mirror.example/ubuntu/")
    monkeypatch.setenv("VMLAB_UBUNTU_KEYRING", str(tmp_path / "own.gpg"))
    assert UBUNTU_24_04.mirror() == "http://mirror.example/ubuntu"
    assert UBUNTU_24_04.keyring(tmp_path) == tmp_path / "own.gpg"  # no download: the user's own keyring
    assert not (tmp_path / "keyrings").exists()
    assert DEBIAN_12.mirror() != UBUNTU_24_04.mirror()  # each distribution has its own variables


def test_ubuntu_keyring_pin() -> None:
    assert UBUNTU_KEYRING.pool_path.endswith("/ubuntu-keyring_2023.11.28.1_all.deb")
    assert UBUNTU_KEYRING.sha256 == "36de43b15853ccae0028e9a767613770c704833f82586f28eb262f0311adb8a8"
    assert UBUNTU_KEYRING.member == "usr/share/keyrings/ubuntu-archive-keyring.gpg"


def test_ubuntu_build_is_refused_without_the_debootstrap_script(monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    from dataclasses import replace

    monkeypatch.setattr(shutil, "which", lambda tool: "/usr/bin/x")
    monkeypatch.setattr(debian.os, "geteuid", lambda: 0)
    monkeypatch.delenv("VMLAB_UBUNTU_KEYRING", raising=False)
    dist = replace(UBUNTU_24_04, script=str(tmp_path / "no-such-script"))
    with pytest.raises(BadInput, match="debootstrap has no .*no-such-script to build Ubuntu noble"):
        debian.check_builder(dist, tmp_path / "cache", ("debootstrap",), "apt-get install debootstrap", "a base",
                             0)
    assert not (tmp_path / "cache").exists()


# ---- the pinned keyring package, over real HTTP ----------------------------------------------------------


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def archive(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTP server on 127.0.0.1 serving `root/` (a mirror), with a real keyring package at POOL."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed")
    root, pkg = tmp_path / "mirror", tmp_path / "pkg"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "DEBIAN/control").write_text("Package: test-keyring\nVersion: 1\nArchitecture: all\n"
                                        "Maintainer: t <t@example.org>\nDescription: test\n")
    (pkg / MEMBER).parent.mkdir(parents=True)
    (pkg / MEMBER).write_bytes(b"keyring bytes")
    (root / POOL).parent.mkdir(parents=True)
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(pkg), str(root / POOL)], check=True,
                   capture_output=True)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", root
    finally:
        server.shutdown()
        server.server_close()


def pin_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_keyring_matching_its_pin_is_used_and_cached(archive: tuple[str, Path], tmp_path: Path) -> None:
    url, root = archive
    keys = PinnedKeyring(POOL, pin_of(root / POOL), MEMBER)
    got = keys.fetch(url, tmp_path / "cache")
    assert got == tmp_path / "cache/test-keyring_1_all/test-archive-keyring.gpg"
    assert got.read_bytes() == b"keyring bytes"
    (root / POOL).unlink()  # the mirror is gone: the cached package (still matching its pin) is enough
    assert keys.fetch(url, tmp_path / "cache").read_bytes() == b"keyring bytes"


def test_keyring_not_matching_its_pin_is_refused(archive: tuple[str, Path], tmp_path: Path) -> None:
    url, root = archive
    keys = PinnedKeyring(POOL, "0" * 64, MEMBER)
    with pytest.raises(HostError) as err:
        keys.fetch(url, tmp_path / "cache")
    assert f"has sha256 {pin_of(root / POOL)}, not the {'0' * 64} vmlab pins" in str(err.value)
    assert list((tmp_path / "cache").iterdir()) == []  # nothing kept, nothing extracted


def test_tampered_cached_keyring_is_fetched_again(archive: tuple[str, Path], tmp_path: Path) -> None:
    url, root = archive
    keys = PinnedKeyring(POOL, pin_of(root / POOL), MEMBER)
    keys.fetch(url, tmp_path / "cache")
    cached = tmp_path / "cache" / Path(POOL).name
    cached.write_bytes(b"something else")
    assert keys.fetch(url, tmp_path / "cache").read_bytes() == b"keyring bytes"
    assert pin_of(cached) == keys.sha256


def test_unreachable_mirror_says_so(tmp_path: Path) -> None:
    keys = PinnedKeyring(POOL, "0" * 64, MEMBER)
    with pytest.raises(HostError, match="downloading http://127.0.0.1:9/pool/.* failed"):
        keys.fetch("http://127.0.0.1:9", tmp_path / "cache")
