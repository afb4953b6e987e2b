"""Container tests run podman with an isolated engine root under the test's tmp folder (never the user's podman
storage, never vmlab's default one), shared by the session: the Debian base is imported into it once from a tar
kept in the shared test cache (`/var/tmp/vmlab-test-cache/container`, built by debootstrap on first use, ~2
minutes), the Ubuntu base likewise for the tests that ask for it (`ubuntu_base`, ~70 s to build). At the end
every container, image and the engine root are removed."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmlab.providers.base import Image
from vmlab.providers.container.engine import Podman
from vmlab.providers.container.provider import ContainerProvider

SHARED_CACHE = Path(os.environ.get("VMLAB_TEST_CACHE", "/var/tmp/vmlab-test-cache")) / "container"
RECIPES = Path(__file__).parent / "recipes"
LAB_RECIPE = "ctr-lab"
HUB_LAB_RECIPE = "ctr-hub-lab"
#: images the session keeps across tests (baked or loaded once)
SESSION_RECIPES = (LAB_RECIPE, HUB_LAB_RECIPE)


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


@pytest.fixture(scope="session")
def ubuntu_base(container_root: Path) -> str:
    """The Ubuntu 24.04 base imported into the session's engine (its tar built once into the shared cache:
    about 70 s here, debootstrap 60 s of it); returns its reference. Skipped (in CI too) when the tar is not
    cached and Ubuntu's archive cannot be reached: not every machine of this kind reaches it."""
    from vmlab.providers.container.baseimage import BASES

    base = BASES["ubuntu-24.04"]
    if not (base.tar_dir(SHARED_CACHE) / "image.json").is_file():
        release = f"{base.dist.mirror()}/dists/{base.dist.suite}/Release"
        try:
            urllib.request.urlopen(release, timeout=15).close()
        except OSError as exc:
            pytest.skip(f"Ubuntu's archive is not reachable ({release}: {exc}) and the base is not cached")
    started = time.monotonic()
    image = ContainerProvider(container_root, base_cache=SHARED_CACHE,
                              progress=lambda msg, _f: print(f"ubuntu base: {msg}", file=sys.stderr)
                              ).build_base_image(base="ubuntu-24.04")
    print(f"ubuntu base ready in {time.monotonic() - started:.0f}s", file=sys.stderr)
    return image.source or image.id


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
            if image.tags.get("vmlab:recipe") not in SESSION_RECIPES:  # the session's lab images stay
                made.delete_image(image.id)


def lab_image_key() -> str:
    """What the lab image is made from: the recipes, their locks and the agent's code (what runs in the image).
    A change to any of them bakes a new one."""
    repo = Path(__file__).resolve().parents[2]
    digest = hashlib.sha256()
    for folder in (repo / "recipes", repo / "vmlab" / "agent", RECIPES):
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            digest.update(str(path.relative_to(repo)).encode() + b"\0" + path.read_bytes())
    for name in ("lab.py", "syncurl.py", "errors.py", "safetext.py", "paths.py", "fileio.py"):
        digest.update((repo / "vmlab" / name).read_bytes())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="session")
def lab_image(container_root: Path) -> str:
    """The id of an image with JupyterLab and the vmlab agent (recipes/lab.py's small sibling). Baked once
    (about 3.7 minutes here: JupyterLab and the agent from PyPI, locked) and kept as an OCI archive in the shared
    test cache under lab_image_key(); later sessions load it (about 15 s)."""
    from vmlab.engine.loader import load_recipe
    from vmlab.workflows.bake import bake

    made = ContainerProvider(container_root, base_cache=SHARED_CACHE)
    archive = SHARED_CACHE / f"lab-image-{lab_image_key()}.tar"
    started = time.monotonic()
    if archive.is_file():
        made.engine.text("load", "-q", "-i", str(archive), what="loading the cached lab image")
        found = made.list_images({"vmlab:recipe": LAB_RECIPE})
        if found:
            print(f"lab image loaded in {time.monotonic() - started:.0f}s", file=sys.stderr)
            return found[0].id
    repo_recipes = str(Path(__file__).resolve().parents[2] / "recipes")  # the recipe imports the repository's
    sys.path.insert(0, repo_recipes)
    try:
        recipe = load_recipe(RECIPES / "lab.py")
    finally:
        sys.path.remove(repo_recipes)
    result = bake(recipe, made, base="debian-12",
                  say=lambda msg: print(f"lab image: {msg}", file=sys.stderr))
    print(f"lab image baked in {time.monotonic() - started:.0f}s", file=sys.stderr)
    return keep_in_cache(made, result.image, archive, "lab-image-*.tar")


def keep_in_cache(made: ContainerProvider, image: Image, archive: Path, older: str) -> str:
    """Save a test image baked now as `archive` in the shared cache (older ones matching `older` go first, the
    file appears whole or not at all); returns the image's id."""
    for old in SHARED_CACHE.glob(older):
        old.unlink()
    partial = archive.with_suffix(".part")
    made.engine.text("save", "-q", "--format", "oci-archive", "-o", str(partial), image.source or "",
                     what=f"keeping {archive.name}")
    partial.rename(archive)
    return image.id


@pytest.fixture(scope="session")
def hub_lab_image(container_root: Path, lab_image: str) -> str:
    """The id of lab_image plus jupyterhub-singleuser at this hub's version (recipes/hub_lab.py), baked on
    lab_image (about a minute: one pip step) and kept in the shared test cache like it."""
    import jupyterhub

    from vmlab.engine.loader import load_recipe
    from vmlab.workflows.bake import bake

    made = ContainerProvider(container_root, base_cache=SHARED_CACHE)
    spec = {"jupyterhub_spec": f"jupyterhub=={jupyterhub.__version__}"}
    # not in RECIPES: lab_image_key() hashes that folder, and a new file there would bake the lab image again
    recipe_file = Path(__file__).parent / "hubrecipes" / "hub_lab.py"
    key = hashlib.sha256((lab_image_key() + recipe_file.read_text() + str(spec)).encode()).hexdigest()[:16]
    archive = SHARED_CACHE / f"hub-lab-image-{key}.tar"
    if archive.is_file():
        made.engine.text("load", "-q", "-i", str(archive), what="loading the cached hub lab image")
        found = made.list_images({"vmlab:recipe": HUB_LAB_RECIPE})
        if found:
            return found[0].id
    started = time.monotonic()
    result = bake(load_recipe(recipe_file), made, base=lab_image, variables=spec,
                  say=lambda msg: print(f"hub lab image: {msg}", file=sys.stderr))
    print(f"hub lab image baked in {time.monotonic() - started:.0f}s", file=sys.stderr)
    return keep_in_cache(made, result.image, archive, "hub-lab-image-*.tar")
