"""The agent's own files (state dir, manifest, status file) inside the synced folder are excluded by an anchored
pattern, also when the folder is named through a symlink; outside it nothing is added."""

from __future__ import annotations

import os
from pathlib import Path

from vmlab.agent.cli import _anchored
from vmlab.agent.manifest import Excludes


def test_inside_outside_and_through_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    assert _anchored(tmp_path / "link", tmp_path / "real" / ".state") == "/.state"
    assert _anchored(tmp_path / "link", tmp_path / "elsewhere") == ""
    assert _anchored(tmp_path / "link", tmp_path / "link") == ""  # the folder itself: never excluded whole


def test_the_pattern_matches_only_that_path_literally(tmp_path: Path) -> None:
    excludes = Excludes(extra=[_anchored(tmp_path, tmp_path / "st[a]te" / "m.json")])
    assert excludes.matches("st[a]te/m.json")
    assert not excludes.matches("state/m.json") and not excludes.matches("sub/st[a]te/m.json")
