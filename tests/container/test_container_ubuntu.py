"""The Ubuntu 24.04 base (`--base ubuntu-24.04`) on real podman: the small recipe (an apt package, files, a systemd
service) bakes on it with the scrub and the secret scan finding nothing on a clean image, the image is Ubuntu
noble and runs its service, and reuse and `vmlab images` keep it apart from the same recipe baked on Debian.
In real builder containers of both bases the Container fact says podman, so recipes/cuda.py plans the toolkit
only (in check mode: NVIDIA's repository is not reachable here)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from test_container_bake import RECIPES, baked, containers, vmlab

from vmlab.engine.command import Command
from vmlab.engine.facts import Container, FactCache, Facts
from vmlab.engine.loader import load_recipe
from vmlab.engine.runner import apply
from vmlab.providers.base import LaunchSpec
from vmlab.providers.container.provider import ContainerProvider
from vmlab.workflows.scrub import scan

pytestmark = pytest.mark.container
CUDA = Path(__file__).resolve().parents[2] / "recipes" / "cuda.py"


def bake_small(base: str, *more: str) -> dict[str, object]:
    result = vmlab("bake", str(RECIPES / "small.py"), "--provider", "container", "--base", base, "--json", *more)
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


def os_release(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def scrubbed_leftovers(provider: ContainerProvider, ref: str) -> str:
    """What the scrub should have emptied, read from the committed image without booting it. wtmp is left out:
    systemd writes its shutdown record there when the builder stops, after the scrub (on Debian too)."""
    check = ("cat /etc/machine-id; find /var/log -type f -size +0 ! -name wtmp; "
             "ls /var/lib/dbus/machine-id /var/lib/systemd/random-seed /root/.bash_history 2>/dev/null; true")
    return provider.engine.text("run", "--rm", "--pull", "never", "--network", "none", "--entrypoint", "sh",
                                ref, "-c", check).strip()


def test_bake_on_ubuntu_and_keep_it_apart_from_debian(provider: ContainerProvider, ubuntu_base: str) -> None:
    started = time.monotonic()
    made = bake_small("ubuntu-24.04", "--name", "ctr-small")
    print(f"container bake of the small recipe on ubuntu-24.04: {time.monotonic() - started:.1f}s, "
          f"timings {made['timings']}")
    assert made["reused"] is False and containers(provider) == []  # scrubbed, scanned clean, committed
    image = provider.describe_image(str(made["image"]))
    assert image is not None and image.tags["vmlab:base"] == "ubuntu-24.04"
    assert image.source == f"localhost/vmlab/ctr-small:{str(made['recipe_hash'])[:12]}-ubuntu-24.04"

    # the scrub did its work on Ubuntu too: no machine id, random seed or history, empty logs
    assert scrubbed_leftovers(provider, image.source) == ""

    inst = provider.launch(LaunchSpec(name="ctr-noble", image=image.id, ssh_public_key="",
                                      tags={"vmlab:run": "test-ctr-noble"}))
    try:
        host = provider.exec_host(inst.id)
        run = lambda *argv: host.execute(Command(*argv))  # noqa: E731
        release = os_release(run("cat", "/etc/os-release").stdout)
        assert release["ID"] == "ubuntu" and release["VERSION_CODENAME"] == "noble"
        assert run("systemctl", "is-active", "small.service").stdout.strip() == "active"
        assert run("cat", "/run/small-greeting").stdout.strip() == "Hello, world!"
        assert run("cat", "/opt/small/app.conf").stdout == "greeting = hello\n"
        assert run("sh", "-c", "ls /var/cache/apt/archives/*.deb").rc != 0
        assert run("dpkg-query", "-W", "-f", "${Version}", "hello").stdout.endswith("build1")  # Ubuntu's hello
    finally:
        provider.terminate(inst.id)

    # the same recipe and name on Debian is another image (not a reuse), and neither loses its name
    on_debian = bake_small("debian-12", "--name", "ctr-small")
    assert on_debian["reused"] is False and on_debian["image"] != image.id
    again = bake_small("ubuntu-24.04", "--name", "ctr-small")
    assert again["reused"] is True and again["image"] == image.id
    listed = vmlab("images", "ls", "--provider", "container")
    rows = {line.split()[0]: line.split() for line in listed.output.splitlines()}
    assert "ubuntu-24.04" in rows[image.id] and "debian-12" in rows[str(on_debian["image"])]
    assert {i.source for i in provider.list_images({"vmlab:recipe": "ctr-small"})} == {
        image.source, image.source.replace("-ubuntu-24.04", "-debian-12")}
    assert vmlab("images", "rm", image.id, str(on_debian["image"]), "--provider", "container").exit_code == 0
    assert baked(provider, "ctr-small") == []


@pytest.mark.parametrize("base", ["debian-12", "ubuntu-24.04"])
def test_builder_is_a_container_to_recipes(provider: ContainerProvider, ubuntu_base: str, base: str) -> None:
    """The Container fact inside a real builder, what cuda.py plans there, and a clean scan of the bare base."""
    inst = provider.launch(LaunchSpec(name=f"ctr-fact-{base}", image=base, ssh_public_key="",
                                      tags={"vmlab:run": "test-ctr-fact"}))
    try:
        host = provider.exec_host(inst.id)
        assert Facts(FactCache(host), True).get(Container()) == "podman"
        recap = apply(load_recipe(CUDA), host, check=True)
        assert [(r.name, r.error) for r in recap.results if r.status == "failed"] == []
        planned = {r.name for r in recap.results if r.status == "changed"}
        assert {"toolkit", "CUDA repository", "CUDA on PATH"} <= planned
        assert not planned & {"kernel headers", "DKMS and downloader", "driver and toolkit", "driver answers"}
        assert scan(host) == []
    finally:
        provider.terminate(inst.id)
    assert containers(provider) == []
