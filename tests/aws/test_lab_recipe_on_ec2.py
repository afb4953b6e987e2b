"""Opt-in, on real AWS (costs money: a t3.large builder for ~25 minutes, a g4dn.xlarge for a few minutes):
bake the default lab recipe on a CPU builder, run the image on a GPU instance, and check the driver answers.

    VMLAB_AWS_TESTS=1 AWS_PROFILE=... AWS_REGION=us-east-1 python -m pytest -m aws tests/aws -q

Skipped unless VMLAB_AWS_TESTS=1. Everything it creates is removed at the end, also when it fails
(`vmlab gc` sweeps what an interrupted run left). Plans of the same recipes are tested without AWS in
tests/unit/test_recipe_*.py.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.aws, pytest.mark.timeout(7200),
              pytest.mark.skipif(os.environ.get("VMLAB_AWS_TESTS") != "1",
                                 reason="real AWS: set VMLAB_AWS_TESTS=1 (and AWS credentials) to run")]
ROOT = Path(__file__).resolve().parents[2]


def vmlab(*args: str, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "vmlab", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def ok(proc: subprocess.CompletedProcess[str]) -> dict:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else {}


@pytest.fixture(scope="module")
def baked() -> Iterator[dict]:
    bake = ok(vmlab("bake", str(ROOT / "recipes" / "lab.py"), "--provider", "ec2", "--base", "ubuntu-24.04",
                    "--builder-type", "t3.large", "--force", "--verify", "--json"))
    try:
        yield bake
    finally:
        vmlab("images", "rm", bake["image"], "--provider", "ec2", timeout=600)


def test_cpu_builder_installs_cuda_and_the_second_run_changes_nothing(baked: dict) -> None:
    first, second = baked["runs"]
    steps = {s["name"]: s["status"] for s in first["steps"]}
    assert steps["cuda: driver and toolkit"] == "changed"
    assert steps["cuda: driver answers"] == "skipped"  # no GPU on the builder
    assert second["changed"] == 0


def test_gpu_lab_from_the_image_sees_its_gpu(baked: dict) -> None:
    name = "aws-" + secrets.token_hex(3)
    ok(vmlab("up", name, "--provider", "ec2", "--image", baked["image"], "--type", "g4dn.xlarge", "--json"))
    try:
        gpus = vmlab("ssh", name, "--", "nvidia-smi", "-L", timeout=300)
        assert gpus.returncode == 0 and "GPU 0:" in gpus.stdout, gpus.stderr
        lab = vmlab("ssh", name, "--", "systemctl", "is-active", "jupyterlab.service", timeout=120)
        assert lab.stdout.strip() == "active"
    finally:
        vmlab("down", name, "--json", timeout=900)


def test_deep_learning_ami_keeps_its_own_driver() -> None:
    bake = ok(vmlab("bake", str(ROOT / "recipes" / "lab.py"), "--provider", "ec2", "--base", "dlami",
                    "--builder-type", "g4dn.xlarge", "--force", "--json"))
    try:
        steps = {s["name"]: s["status"] for s in bake["runs"][0]["steps"]}
        assert {status for name, status in steps.items() if name.startswith("cuda: ")} == {"skipped"}
    finally:
        vmlab("images", "rm", bake["image"], "--provider", "ec2", timeout=600)
