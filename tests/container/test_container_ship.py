"""Shipping a baked image: `vmlab images export` (OCI layout, docker-archive) and `vmlab push` to a real registry
(Debian's docker-registry, started by the test on 127.0.0.1), then pulled back by the printed digest."""

from __future__ import annotations

import json
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from vmlab.providers.container.provider import ContainerProvider

pytestmark = pytest.mark.container
RECIPES = Path(__file__).parent / "recipes"


def vmlab(*args: str) -> Result:
    from vmlab.cli import cli

    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def registry(tmp_path: Path) -> Iterator[str]:
    """docker-registry on 127.0.0.1:PORT, storage in tmp; yields "127.0.0.1:PORT"."""
    port = _free_port()
    config = tmp_path / "registry.yml"
    config.write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
                      f"    rootdirectory: {tmp_path}/data\nhttp:\n  addr: 127.0.0.1:{port}\n")
    proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "the registry did not start"
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_export_push_and_pull_by_digest(provider: ContainerProvider, registry: str, tmp_path: Path) -> None:
    made = vmlab("bake", str(RECIPES / "small.py"), "--provider", "container", "--json")
    assert made.exit_code == 0, made.output
    image = json.loads(made.stdout)["image"]

    oci = vmlab("images", "export", image, "--provider", "container", "--oci", str(tmp_path / "oci"))
    assert oci.exit_code == 0, oci.output
    index = json.loads((tmp_path / "oci" / "index.json").read_text())
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "latest"
    archive = vmlab("images", "export", image, "--provider", "container", "--docker-archive",
                    str(tmp_path / "lab.tar"))
    assert archive.exit_code == 0, archive.output
    with tarfile.open(tmp_path / "lab.tar") as tar:
        assert "manifest.json" in tar.getnames()
    again = vmlab("images", "export", image, "--provider", "container", "--oci", str(tmp_path / "oci"))
    assert again.exit_code == 2 and "it exists" in again.output

    pushed = vmlab("push", image, f"{registry}/vmlab/small:v1", "--provider", "container", "--json")
    assert pushed.exit_code == 0, pushed.output
    result = json.loads(pushed.stdout)
    assert result["digest"].startswith("sha256:") and result["pull"] == f"{registry}/vmlab/small@{result['digest']}"

    provider.delete_image(image)  # pulled back from the registry alone, by digest
    pull = provider.engine.call("pull", "--tls-verify=false", result["pull"])
    assert pull.returncode == 0, pull.stderr.decode()
    back = json.loads(provider.engine.text("image", "inspect", result["pull"]))[0]
    assert back["Labels"]["vmlab:recipe"] == "ctr-small" and back["Digest"] == result["digest"]
    provider.engine.call("rmi", result["pull"])


@pytest.mark.parametrize("dest, says", [("small:v1", "is not a registry reference"),
                                        ("127.0.0.1:5000/Bad/Repo", "is not a registry reference")])
def test_bad_push_destination_exits_2(provider: ContainerProvider, dest: str, says: str) -> None:
    result = vmlab("push", "debian-12", dest, "--provider", "container")
    assert result.exit_code == 2 and says in result.output


def test_local_provider_cannot_push() -> None:
    result = vmlab("push", "limg-1", "127.0.0.1:5000/x:y", "--provider", "local")
    assert result.exit_code == 2 and "the local provider cannot push images" in result.output
