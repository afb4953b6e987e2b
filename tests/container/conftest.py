"""Container tests run podman with an isolated engine root under the test's tmp folder (never the user's podman
storage, never vmlab's default one), shared by the session: the Debian base is imported into it once from a tar
kept in the shared test cache (`/var/tmp/vmlab-test-cache/container`, built by debootstrap on first use, ~2
minutes). At the end every container, image and the engine root are removed."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmlab.providers.container.engine import Podman
from vmlab.providers.container.provider import ContainerProvider

SHARED_CACHE = Path(os.environ.get("VMLAB_TEST_CACHE", "/var/tmp/vmlab-test-cache")) / "container"
RECIPES = Path(__file__).parent / "recipes"


def _skip_or_fail(message: str) -> None:
    pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)


def reset_engine(root: Path) -> None:
    """Remove every container and image of the engine at `root`, then its folders."""
    engine = Podman(root)
    engine.call("rm", "-a", "-f", "-v", "-t", "0")
    engine.call("system", "reset", "-f")
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(engine.run_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def container_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An engine root with the base image imported (the tar built once into the shared cache)."""
    if os.geteuid() != 0:
        _skip_or_fail("the container tests need root (podman with runc, debootstrap)")
    if shutil.which("podman") is None:
        _skip_or_fail("podman is not installed: run `. scripts/deps.sh; vmlab_system_packages`")
    root = tmp_path_factory.mktemp("podman")
    try:
        ContainerProvider(root, base_cache=SHARED_CACHE,
                          progress=lambda msg, _f: print(f"container base: {msg}", file=sys.stderr)
                          ).build_base_image()
        yield root
    finally:
        reset_engine(root)


@pytest.fixture()
def provider(container_root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ContainerProvider]:
    """The container provider on the session's engine (VMLAB_CONTAINER_ROOT points CLI runs at it too). Every
    container and vmlab-baked image is removed after the test."""
    monkeypatch.setenv("VMLAB_CONTAINER_ROOT", str(container_root))
    made = ContainerProvider(container_root, base_cache=SHARED_CACHE)
    try:
        yield made
    finally:
        made.engine.call("rm", "-a", "-f", "-v", "-t", "0")
        for image in made.list_images({"vmlab:recipe-hash": "*"}):
            made.delete_image(image.id)
