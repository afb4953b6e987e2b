"""The secret scan script, run for real on this machine over a folder of planted files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from vmlab.workflows.scrub import SCAN_SCRIPT

FAKE_AWS_ID = "AKIA" + "ABCDEFGHIJKLMNOP"  # split so this file itself is no finding


def scan(*roots: Path) -> list[list[str]]:
    out = subprocess.run([sys.executable, "-", *map(str, roots)], input=SCAN_SCRIPT, text=True,
                         capture_output=True, check=True).stdout
    return json.loads(out)


def test_finds_planted_secrets_and_nothing_else(tmp_path: Path) -> None:
    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws" / "credentials").write_text(f"[default]\naws_access_key_id = {FAKE_AWS_ID}\n")
    (tmp_path / "id_rsa").write_text("-----BEGIN OPENSSH " + "PRIVATE KEY-----\nabc\n")
    (tmp_path / "jupyter.env").write_text("JUPYTER_TOKEN=" + "a" * 32 + "\n")
    (tmp_path / "notes.txt").write_text("AKIA is how AWS key ids start; public keys are fine: ssh-ed25519 AAAA\n")
    (tmp_path / "site-packages").mkdir()
    (tmp_path / "site-packages" / "lib.py").write_text("-----BEGIN RSA " + "PRIVATE KEY-----\n")
    hits = {Path(p).name: what for p, what in scan(tmp_path)}
    assert hits == {"credentials": "AWS access key id", "id_rsa": "private key", "jupyter.env": "Jupyter token"}


def test_clean_tree_has_no_hits(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("nothing to see\n")
    assert scan(tmp_path) == []
