"""The image's package list (vmlab/workflows/packages.py): read from a real host (this machine, read only), with
Python environments and a conda prefix laid out under tmp_path; counts and tags."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from vmlab.transport.local import LocalHost
from vmlab.workflows import packages


def test_collect_lists_debian_python_and_conda_packages(tmp_path: Path) -> None:
    lab = tmp_path / "lab"  # a venv holding one distribution we know
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(lab)], check=True, timeout=120)
    (site,) = lab.glob("lib/python3*/site-packages")
    info = site / "demo_pkg-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: demo-pkg\nVersion: 1.2.3\n")
    conda = tmp_path / "conda"
    (conda / "bin").mkdir(parents=True)
    (conda / "bin" / "python").symlink_to(sys.executable)
    (conda / "conda-meta").mkdir()
    (conda / "conda-meta" / "numpy-2.1.3-py312h1.json").write_text(
        json.dumps({"name": "numpy", "version": "2.1.3", "build": "py312h1"}))
    (conda / "conda-meta" / "broken.json").write_text("{")  # skipped, not fatal
    found = packages.collect(LocalHost(), roots=(str(tmp_path),))
    if Path("/usr/bin/dpkg-query").exists():
        assert "dpkg" in found["apt"] and found["apt"]["dpkg"]
    assert found["python"][str(lab)] == {"demo-pkg": "1.2.3"}
    assert found["conda"] == {str(conda): {"numpy": "2.1.3=py312h1"}}
    counts = packages.counts(found)
    assert counts["conda"] == 1 and counts["python"] == 1 + len(found["python"][str(conda)])
    tags = packages.summary_tags(found)
    assert tags["vmlab:packages"].startswith(f"apt {len(found['apt'])}, python ")
    assert tags["vmlab:packages-sha256"] == hashlib.sha256(packages.encode(found)).hexdigest()
    assert all(len(v) <= 256 for v in tags.values())  # EC2's limit for a tag value


def test_local_copy_round_trip() -> None:
    assert packages.load_local("limg-none") is None
    packages.save_local("limg-1", {"apt": {"a": "1"}, "python": {}, "conda": {}})
    assert packages.load_local("limg-1") == {"apt": {"a": "1"}, "python": {}, "conda": {}}
