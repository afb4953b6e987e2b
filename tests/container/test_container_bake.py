"""`vmlab bake --provider container` on real podman: the recipe runs in a builder container with systemd as PID 1
(over `podman exec`, no SSH), the builder is scrubbed, scanned and committed to an image tagged with the recipe
hash; a second bake reuses it, `--force` makes another; `vmlab images` lists and removes them. A failing step, a
planted secret and a SIGTERM mid-apply each leave no container and no image behind (checked by label)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from vmlab.engine.command import Command
from vmlab.providers.container.provider import ContainerProvider

pytestmark = pytest.mark.container
RECIPES = Path(__file__).parent / "recipes"
FAILS = Path(__file__).parent.parent / "e2e" / "recipes" / "fails.py"


def vmlab(*args: str) -> Result:
    from vmlab.cli import cli

    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def containers(provider: ContainerProvider) -> list[str]:
    """Every container in the engine, by name (vmlab's or not)."""
    return provider.engine.text("ps", "-a", "--format", "{{.Names}}").split()


def baked(provider: ContainerProvider, recipe: str) -> list[str]:
    return [i.id for i in provider.list_images({"vmlab:recipe": recipe})]


def test_bake_reuse_force_and_images(provider: ContainerProvider) -> None:
    started = time.monotonic()
    first = vmlab("bake", str(RECIPES / "small.py"), "--provider", "container", "--json")
    assert first.exit_code == 0, first.output
    made = json.loads(first.stdout)
    bake_seconds = time.monotonic() - started
    print(f"container bake of the small recipe: {bake_seconds:.1f}s, timings {made['timings']}")
    assert made["reused"] is False and containers(provider) == []
    image = provider.describe_image(made["image"])
    assert image is not None
    labels = dict(image.tags)
    assert labels["vmlab:recipe"] == "ctr-small" and labels["vmlab:recipe-hash"] == made["recipe_hash"]
    assert labels["vmlab:base"] == "debian-12" and labels["vmlab:version"]
    assert labels["org.opencontainers.image.title"] == image.name
    assert image.source == f"localhost/vmlab/{image.name}:{made['recipe_hash'][:12]}-debian-12"
    assert "vmlab:packages-sha256" in labels  # the package list was taken, and kept on this machine:
    shown = vmlab("images", "show", image.id, "--provider", "container", "--json")
    assert "hello" in json.loads(shown.stdout)["packages"]["apt"]

    # the image boots with systemd and holds what the recipe made, and no builder identity
    inst = provider.launch(_spec("ctr-check", image.id))
    try:
        host = provider.exec_host(inst.id)
        run = lambda *argv: host.execute(Command(*argv))  # noqa: E731
        assert run("systemctl", "is-enabled", "small.service").stdout.strip() == "enabled"
        assert run("systemctl", "is-active", "small.service").stdout.strip() == "active"
        assert run("cat", "/run/small-greeting").stdout.strip() == "Hello, world!"
        assert run("cat", "/opt/small/app.conf").stdout == "greeting = hello\n"
        assert run("sh", "-c", "ls /var/cache/apt/archives/*.deb").rc != 0
    finally:
        provider.terminate(inst.id)

    again = vmlab("bake", str(RECIPES / "small.py"), "--provider", "container", "--json")
    reused = json.loads(again.stdout)
    assert reused["reused"] is True and reused["image"] == image.id

    forced = vmlab("bake", str(RECIPES / "small.py"), "--provider", "container", "--force", "--json")
    assert forced.exit_code == 0, forced.output
    second = json.loads(forced.stdout)["image"]
    assert second != image.id and containers(provider) == []

    listed = json.loads(vmlab("images", "ls", "--provider", "container", "--json").stdout)["images"]
    assert {i["id"] for i in listed} == {image.id, second}  # the base image is not a vmlab-baked image
    removed = vmlab("images", "rm", image.id, second, "--provider", "container")
    assert removed.exit_code == 0, removed.output
    assert baked(provider, "ctr-small") == []
    assert provider.describe_image("debian-12") is not None


def _spec(name: str, image: str):  # type: ignore[no-untyped-def]
    from vmlab.providers.base import LaunchSpec

    return LaunchSpec(name=name, image=image, ssh_public_key="", tags={"vmlab:run": f"test-{name}"})


def test_planted_secret_fails_the_bake_and_leaves_nothing(provider: ContainerProvider) -> None:
    result = vmlab("bake", str(RECIPES / "plants_secret.py"), "--provider", "container")
    assert result.exit_code != 0
    assert "secrets found on the builder, no image made" in result.output
    assert "/opt/app/settings.ini (AWS access key id)" in result.output
    assert containers(provider) == [] and baked(provider, "ctr-plants-secret") == []


def test_failing_step_leaves_nothing(provider: ContainerProvider) -> None:
    result = vmlab("bake", str(FAILS), "--provider", "container")
    assert result.exit_code != 0 and "a failing command" in result.output
    assert containers(provider) == [] and baked(provider, "e2e-fails") == []


@pytest.mark.parametrize("fault", ["SIGTERM", "SIGINT", "SIGHUP", "builder killed"])
def test_fault_mid_apply_removes_the_builder(provider: ContainerProvider, fault: str) -> None:
    """A signal to vmlab, or the builder's systemd killed under it, while a recipe step runs: exit 128+signal
    (or 1), and no container or image of the run is left (found by label)."""
    proc = subprocess.Popen([sys.executable, "-m", "vmlab", "bake", str(RECIPES / "slow.py"), "--provider",
                             "container"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=os.environ.copy())
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # the builder exists and the long step has begun
            ids = provider.engine.text("ps", "-q", "--filter", "label=vmlab:recipe=ctr-slow").split()
            if ids and provider.engine.call("exec", ids[0], "test", "-e", "/run/vmlab-slow-started").returncode == 0:
                break
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            time.sleep(0.3)
        else:
            pytest.fail("the slow step never started")
        if fault == "builder killed":
            provider.engine.text("kill", ids[0])
        else:
            proc.send_signal(getattr(signal, fault))
        out = proc.communicate(timeout=60)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    expected = 1 if fault == "builder killed" else 128 + getattr(signal, fault)
    assert proc.returncode == expected, out
    assert "removed builder" in out
    assert fault != "builder killed" or "failed on the builder at step a long step" in out
    assert provider.engine.text("ps", "-a", "-q", "--filter", "label=vmlab:recipe=ctr-slow").split() == []
    assert containers(provider) == [] and baked(provider, "ctr-slow") == []

@pytest.mark.parametrize("args, says", [
    (("--name", "Bad Name"), "is not a container image name"),
    (("--volume-size", "20"), "--volume-size does not apply to containers"),
    (("--spot",), "--spot only applies to --provider ec2"),
    (("--base", "ubuntu-22.04"), "container image 'ubuntu-22.04' not found: the bases are debian-12, ubuntu-24.04"),
])
def test_bad_input_exits_2_before_any_container(provider: ContainerProvider, args: tuple[str, ...],
                                                says: str) -> None:
    result = vmlab("bake", str(RECIPES / "small.py"), "--provider", "container", *args)
    assert result.exit_code == 2 and says in result.output and len(result.output.strip().splitlines()) <= 2
    assert containers(provider) == [] and baked(provider, "ctr-small") == []


def test_dry_run_plans_and_makes_nothing(provider: ContainerProvider) -> None:
    result = vmlab("bake", str(RECIPES / "small.py"), "--provider", "container", "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["action"] == "bake" and "slirp4netns" in plan["launch"]["creates"][0]
    assert containers(provider) == [] and baked(provider, "ctr-small") == []
