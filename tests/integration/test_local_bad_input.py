"""Bad input to the lab commands on the local provider: exit 2, one line saying what is wrong and how to fix it,
and nothing created (no VM, no image, no key, no base image build). No VM is booted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAB_RECIPE = str(REPO / "recipes" / "lab.py")


@pytest.mark.parametrize(("args", "message"), [
    (["up", "lab", "--image", "nope"], "image 'nope' not found"),
    (["up", "Bad_Name"], "lab name 'Bad_Name' is not valid"),
    (["up", "lab", "--provider", "nope"], "unknown provider 'nope'"),
    (["bake", "/nonexistent/recipe.py"], "no such recipe file"),
    (["bake", LAB_RECIPE, "-e", "novalue"], "expected NAME=VALUE"),
    (["bake", LAB_RECIPE, "--base", "nope"], "no local image 'nope'"),
    (["tunnel", "nosuch"], "no lab named 'nosuch'"),
    (["down", "nosuch"], "no lab named 'nosuch'"),
    (["stop", "nosuch"], "no lab named 'nosuch'"),
    (["ssh", "nosuch"], "no lab named 'nosuch'"),
    (["images", "rm", "limg-000000"], "image 'limg-000000' not found"),
])
def test_bad_input_exits_2_with_one_line_and_creates_nothing(args: list[str], message: str) -> None:
    env = {**os.environ, "VMLAB_PROVIDER": "local"}
    proc = subprocess.run([sys.executable, "-m", "vmlab", *args], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert lines[0].startswith("vmlab: error: ") and ": " in lines[0][len("vmlab: error: "):]  # has a hint
    created = [p for p in Path(os.environ["VMLAB_CACHE_DIR"]).rglob("*") if p.is_file()]
    created += [p for p in Path(os.environ["VMLAB_STATE_DIR"]).rglob("*")
                if p.is_file() and not p.name.startswith(".")]
    assert created == []
