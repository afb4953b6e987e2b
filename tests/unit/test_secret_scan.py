"""The secret scan (vmlab/workflows/secretscan.py), run for real with this machine's python3 as a builder runs it
(`python3 - ARGS` with the program on stdin): over a fake builder root with planted secrets (recall must be 100%)
and over a clean Debian 12 root made by debootstrap (no finding may be a false one)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import secretcorpus

from harness.clouds import rootfs
from vmlab.workflows.scrub import SCAN_SCRIPT, parse_hits, printable, scrub_command

FAKE_AWS_ID = "AKIA" + "ABCDEFGHIJKLMNOP"  # split so this file itself is no finding
BUILDER = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBuilderKeyBuilderKeyBuilderKeyBuilder vmlab-bake"


def run_scan(*args: str) -> tuple[list[list[str]], dict[str, float]]:
    done = subprocess.run(["python3", "-", *args], input=SCAN_SCRIPT.encode(), capture_output=True, timeout=600,
                          check=True)
    return json.loads(done.stdout), json.loads(done.stderr.decode().strip().splitlines()[-1])


def scan(*roots: Path) -> list[list[str]]:
    return run_scan(*map(str, roots))[0]


def test_planted_corpus_is_found_in_full(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "root"
    secretcorpus.plant(root)
    hits, stats = run_scan("--root", str(root))
    planted = secretcorpus.all_planted()
    found = {path: kind for path, kind in hits}
    right = [path for path, kind in planted.items() if found.get(path) == kind]
    recall = len(right) / len(planted)
    with capsys.disabled():
        print(f"\nsecret scan recall: {len(right)}/{len(planted)} planted secrets = {recall:.0%} "
              f"({len(planted)} files, {len(set(planted.values()))} kinds; {stats['seconds']} s)")
    assert {p: found.get(p) for p in planted if found.get(p) != planted[p]} == {}
    # nothing else: no decoy, no package-owned or pruned file, nothing off the disk
    assert sorted(set(found) - set(planted)) == []
    assert len(hits) == len(found)  # one entry per file
    # a hit is a path and a kind, never the secret
    out = json.dumps(hits)
    for content, _kind in secretcorpus.PLANTED.values():
        text = content if isinstance(content, str) else content.decode()
        assert all(word not in out for word in text.split() if len(word) >= 20)
    # the 1 GiB sparse file was read by its data extents, not byte by byte
    assert stats["read"] < 64 << 20


def test_owned_files_outside_etc_are_not_read_and_a_changed_conffile_is(tmp_path: Path) -> None:
    root = tmp_path / "root"
    secretcorpus.plant(root)
    found = {path: kind for path, kind in run_scan("--root", str(root))[0]}
    assert "/etc/owned.conf" in found  # dpkg's conffile, edited: read and reported
    assert "/" + secretcorpus.OWNED_PRISTINE_CONF not in found  # byte for byte what dpkg installed
    # the same pristine conffile with one byte changed is reported
    path = root / secretcorpus.OWNED_PRISTINE_CONF
    path.write_text(path.read_text() + " ")
    found = {p for p, _ in run_scan("--root", str(root))[0]}
    assert "/" + secretcorpus.OWNED_PRISTINE_CONF in found


def test_folders_named_on_the_command_line(tmp_path: Path) -> None:
    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws" / "credentials").write_text(f"[default]\naws_access_key_id = {FAKE_AWS_ID}\n")
    (tmp_path / "id_rsa").write_text("-----BEGIN OPENSSH " + "PRIVATE KEY-----\nabc\n")
    (tmp_path / "jupyter.env").write_text("JUPYTER_TOKEN=" + "a" * 32 + "\n")
    (tmp_path / "notes.txt").write_text("AKIA is how AWS key ids start; public keys are fine: ssh-ed25519 AAAA\n")
    (tmp_path / "site-packages").mkdir()  # no RECORD says pip put it there: read
    (tmp_path / "site-packages" / "stray.py").write_text("-----BEGIN RSA " + "PRIVATE KEY-----\n")
    hits = {Path(p).name: what for p, what in scan(tmp_path)}
    assert hits == {"credentials": "AWS access key id", "id_rsa": "private key", "jupyter.env": "Jupyter token",
                    "stray.py": "private key"}


def test_clean_tree_has_no_hits(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("nothing to see\n")
    os.mkfifo(tmp_path / "fifo")  # never opened for reading in a way that blocks
    (tmp_path / "link").symlink_to("/etc/shadow")  # never followed
    assert scan(tmp_path) == []


def test_the_scan_program_is_no_finding_itself(tmp_path: Path) -> None:
    (tmp_path / "secretscan.py").write_text(SCAN_SCRIPT)
    assert scan(tmp_path) == []


def test_hits_are_shown_escaped() -> None:
    hits = parse_hits(json.dumps([["/home/a/caf\udce9\n\x1b[31m.txt", "private key"]]))
    assert hits[0].path == "/home/a/caf\\xe9\\n\\x1b[31m.txt"
    assert printable("a\\b\tc") == "a\\\\b\\tc"


# ---- a clean Debian 12 root: the scan must not stop a real bake for nothing --------------------------------


@pytest.fixture(scope="session")
def debian_root() -> Path:
    reason = rootfs.why_not()
    if reason:
        pytest.skip(reason)
    return rootfs.clean_root("bookworm")


def test_clean_debian_root_has_no_false_positive(debian_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hits, stats = run_scan("--root", str(debian_root))
    with capsys.disabled():
        print(f"\nsecret scan of a Debian 12 minbase root: {stats}")
    # a stock system holds exactly one kind of secret: the host keys the SSH package made, which the scrub removes
    assert sorted(hits) == [[f"/etc/ssh/ssh_host_{t}_key", "private key"] for t in ("ecdsa", "ed25519", "rsa")]


@pytest.fixture()
def root_copy(debian_root: Path) -> Iterator[Path]:
    """A copy of the clean root owned by nobody (not under pytest's tmp_path: its parents are root-only), so the
    scrub can run on it as nobody and a path it forgot to prefix cannot touch this machine."""
    top = Path(tempfile.mkdtemp(prefix="vmlab-scan-"))
    try:
        subprocess.run(["cp", "-a", "--reflink=auto", str(debian_root), str(top / "root")], check=True, timeout=600)
        subprocess.run(["chown", "-R", "65534:65534", str(top)], check=True, timeout=600)
        subprocess.run(["chmod", "-R", "u+w", str(top)], check=True, timeout=600)  # root writes 0444 files too
        yield top / "root"
    finally:
        shutil.rmtree(top)


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv")
def test_debian_root_after_the_scrub_passes_and_planted_secrets_are_caught(root_copy: Path) -> None:
    argv = scrub_command(BUILDER, str(root_copy)).argv
    done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert run_scan("--root", str(root_copy))[0] == []
    # the corpus inside a real system: its package records must not hide a planted file
    secretcorpus.plant(root_copy)
    found = {path: kind for path, kind in run_scan("--root", str(root_copy))[0]}
    planted = secretcorpus.all_planted()
    assert {p: found.get(p) for p in planted if found.get(p) != planted[p]} == {}


def test_every_pattern_is_exercised_and_its_matches_hold_an_anchor() -> None:
    """The scan only runs a pattern on data holding one of its anchors: a match without one would be missed.
    Every pattern must match somewhere in the corpus, and every such match must contain an anchor."""
    from vmlab.workflows.secretscan import COMPILED, anchors_in

    texts = [c.encode() if isinstance(c, str) else c for c, _ in secretcorpus.PLANTED.values()]
    for kind, anchors, rx, _before in COMPILED:
        found = [m.group() for text in texts for m in rx.finditer(text)]
        assert found, f"no planted secret exercises a {kind} pattern: {rx.pattern!r}"
        assert [g for g in found if not any(a in g for a in anchors)] == [], kind
    for text in texts:  # and the one-pass anchor search sees every anchor there is
        assert {a for _, anchors, _, _ in COMPILED for a in anchors if a in text} <= anchors_in(text)
    assert {b"ASIA", b"SAS"} <= anchors_in(b"xSASIAx")  # overlapping anchors


def test_the_scan_program_parses_as_python_3_8() -> None:
    """Builders run their own python3 (Ubuntu 22.04: 3.10, Amazon Linux 2023: 3.9): no newer syntax."""
    import ast

    tree = ast.parse(SCAN_SCRIPT, feature_version=(3, 8))
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.NamedExpr | ast.Match)]


def test_random_and_compressed_data_is_no_finding(tmp_path: Path) -> None:
    """An initrd, a model's weights, a tarball: bytes that are no text must not match by chance."""
    import gzip
    import random

    rng = random.Random(7)
    (tmp_path / "weights.bin").write_bytes(rng.randbytes(24 << 20))
    (tmp_path / "initrd.img").write_bytes(gzip.compress(rng.randbytes(4 << 20), compresslevel=1))
    (tmp_path / "urls.bin").write_bytes(b"\x00".join(b"://" + rng.randbytes(300) for _ in range(20000)))
    assert scan(tmp_path) == []


def test_scan_ignore_file_is_honoured_and_reported(tmp_path: Path) -> None:
    root = tmp_path / "root"
    secretcorpus.plant(root)
    (root / "etc/vmlab").mkdir(parents=True, exist_ok=True)
    (root / "etc/vmlab/scan-ignore").write_text("# checked by hand: test fixtures\n/home/admin/.aws\n"
                                               "/etc/billing.conf\nrelative/is/ignored\n")
    hits, stats = run_scan("--root", str(root))
    found = {path for path, _ in hits}
    assert "/home/admin/.aws/config" not in found and "/etc/billing.conf" not in found
    assert "/root/.aws/credentials" in found  # only what is listed
    assert stats["ignored"] == ["/home/admin/.aws", "/etc/billing.conf"]
