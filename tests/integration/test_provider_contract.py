"""The provider contract (docs/providers.md) from the outside: a minimal provider written here, with the base verbs
only and no capability, registered in the plain-dict registry, runs `bake`, `up`, `ls`, `status` and `down`
through the real CLI; what needs a capability it lacks (`share-ami`, `gc`, `up --sync`, `--spot`) is refused in
one line, exit 2, before anything is made.

Its "instances" are throwaway sandbox hosts with a real sshd on 127.0.0.1 (harness/clouds/sandboxprovider.py); an
image is the upper dir a stopped sandbox leaves, the root of the next sandbox. No EC2, no QEMU.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from harness.clouds.sandboxprovider import JUPYTER, Cloud
from harness.drivers.ec2cli import run_vmlab
from vmlab import lab

pytestmark = pytest.mark.sshd

RECIPE = str(Path(__file__).parent / "recipes" / "ec2_flow.py")


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One state dir for the module: the lab `up` records is the one `ls` and `down` read."""
    return tmp_path_factory.mktemp("state")


@pytest.fixture()
def env(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VMLAB_STATE_DIR", str(state))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.delenv("VMLAB_PROVIDER", raising=False)


def ok(*args: str) -> dict[str, Any]:
    result = run_vmlab(*args, "--json")
    assert result.exit_code == 0, result.output + result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def refused(*args: str, fragment: str) -> None:
    result = run_vmlab(*args)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, (result.exit_code, result.output, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("vmlab: error: ") and fragment in lines[0], result.stderr
    assert ": " in lines[0].removeprefix("vmlab: error: "), "the line must name the fix after the problem"


def live(cloud: Cloud) -> list[str]:
    return sorted(cloud.instances)


def test_bake_up_ls_down_through_a_provider_with_the_base_verbs_only(cloud: Cloud, env: None, state: Path) -> None:
    baked = ok("bake", RECIPE, "--provider", "sandbox", "-e", f"jupyter={JUPYTER}")
    image = cloud.images[baked["image"]]
    assert image.tags["vmlab:recipe"] == "ec2-flow" and image.tags["vmlab:run"].startswith("bake-")
    assert live(cloud) == [] and not cloud.boxes, "the builder must be gone"
    assert (cloud.layers[image.id][0] / "etc/vmlab-flow-marker").read_text() == "baked by test_ec2_flow\n"

    up = ok("up", "lab1", "--provider", "sandbox")
    record = up["lab"]
    assert record["provider"] == "sandbox" and record["region"] is None and record["image"] == image.id
    assert live(cloud) == [record["instance_id"]] and up["offer"] is None  # no Quotes: no price shown
    token = json.loads((state / "labs" / "lab1.json").read_text())["token"]
    status = urllib.request.Request(f"http://127.0.0.1:{lab.PORT}/api/status",
                                    headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(status, timeout=10) as answer:
        assert answer.status == 200

    (row,) = ok("ls")["labs"]
    assert (row["name"], row["provider"], row["state"], row["region"], row["hourly_price"]) == (
        "lab1", "sandbox", "running", None, None)
    assert [r["instance"] for r in ok("ls", "--provider", "sandbox")["labs"]] == [record["instance_id"]]

    status = ok("status", "lab1")  # reads the lab's agent status over SSH: none written by this image
    assert (status["state"], status["agent"]) == ("running", None)
    assert status["settings"] == {"idle_minutes": 30.0, "max_hours": 24.0, "sync_url": None}

    down = ok("down", "lab1")
    assert f"instance {record['instance_id']}" in down["removed"]
    assert live(cloud) == [] and ok("ls")["labs"] == []


@pytest.mark.parametrize(("args", "fragment"), [
    (["share-ami", "simg-0", "--account", "123456789012"], "the sandbox provider cannot share images"),
    (["gc", "--yes"], "the sandbox provider cannot sweep leftovers"),
    (["up", "lab2", "--sync", "s3://bucket/alice"], "the sandbox provider cannot give a lab access to a bucket"),
    (["up", "lab2", "--spot"], "--spot only applies to --provider ec2 (not sandbox)"),
    (["bake", RECIPE, "--region", "eu-west-1"], "--region only applies to --provider ec2 (not sandbox)"),
])
def test_what_needs_a_missing_capability_is_refused_in_one_line(cloud: Cloud, env: None, args: list[str],
                                                                 fragment: str) -> None:
    launched = list(cloud.launched)
    refused(*args, "--provider", "sandbox", fragment=fragment)
    assert cloud.launched == launched and live(cloud) == []


def test_what_the_package_listing_runs_is_scanned_for_secrets(cloud: Cloud, env: None) -> None:
    """The bake lists packages by running every /opt/*/bin/python as root: that happens before the secret scan,
    so whatever those programs write is scanned too, and here stops the bake."""
    leaky = str(Path(__file__).parent / "recipes" / "leaky_python.py")
    result = run_vmlab("bake", leaky, "--provider", "sandbox")
    assert result.exit_code == 1, (result.output, result.stderr)
    assert "secrets found on the builder, no image made: /etc/vmlab-leaky-listing" in result.stderr, result.stderr
    assert live(cloud) == [] and not [i for i in cloud.images.values() if i.tags.get("vmlab:recipe") == "leaky-python"]
