"""A container lab's two volumes on a real podman: removal never takes a container with it, an agent volume only
serves the data volume it was made with, and a lab whose container is gone is checked against the store it was
launched with, not whatever this shell points at."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from vmlab.errors import BadInput, HostError, LabNotStopped
from vmlab.providers.container import labvolumes
from vmlab.providers.container.provider import ContainerProvider

pytestmark = pytest.mark.container
STORE = {"AWS_ENDPOINT_URL": "http://store-a.invalid:9000", "AWS_REGION": "eu-west-1"}


@pytest.fixture()
def volumes(provider: ContainerProvider) -> Iterator[ContainerProvider]:
    """The provider; every volume is removed after the test (its containers go first, in `provider`)."""
    yield provider
    provider.engine.call("rm", "-a", "-f", "-t", "0")
    for volume in provider.engine.text("volume", "ls", "--format", "{{.Name}}").split():
        provider.engine.call("volume", "rm", volume)


def test_removal_refuses_while_a_container_uses_the_volumes_and_the_container_survives(
        volumes: ContainerProvider, lab_image: str) -> None:
    """`down` checked a stopped lab, then a relaunch put a container on its volumes: removing them refuses (no
    `-f`, which would remove that container with them) and the container keeps running."""
    engine = volumes.engine
    assert labvolumes.create_missing(engine, "vol1", {"vmlab:lab": "vol1"}, STORE) == ["vmlab-vol1-data",
                                                                                       "vmlab-vol1-agent"]
    engine.text("run", "-d", "--name", "relaunched", "--network", "none", "-v", "vmlab-vol1-data:/d",
                "-v", "vmlab-vol1-agent:/a", "--entrypoint", "sleep", lab_image, "600")
    with pytest.raises(HostError, match="removing volume vmlab-vol1-agent failed") as refused:
        volumes.remove_lab_data("vol1")
    assert "a container uses it" in str(refused.value.hint)
    assert engine.text("inspect", "--format", "{{.State.Status}}", "relaunched").strip() == "running"
    assert volumes.lab_data_tags("vol1") == {"vmlab:lab": "vol1"}


def test_an_agent_volume_serves_only_the_data_volume_it_was_made_with(volumes: ContainerProvider) -> None:
    engine = volumes.engine
    labvolumes.create_missing(engine, "vol2", {"vmlab:lab": "vol2"}, STORE)
    engine.text("volume", "rm", "vmlab-vol2-data")  # the data went (by hand): only the agent volume is left
    tags = volumes.lab_data_tags("vol2")  # still "has data", for `down` and the hub
    assert tags is not None and tags["vmlab:lab"] == "vol2"
    old = labvolumes.inspect(engine, "vmlab-vol2-agent")
    # a new data volume gets a new agent volume (the old manifest would read the empty folder as deletions)
    assert labvolumes.create_missing(engine, "vol2", {}, STORE) == ["vmlab-vol2-data", "vmlab-vol2-agent"]
    new = labvolumes.inspect(engine, "vmlab-vol2-agent")
    assert old is not None and new is not None and new["CreatedAt"] != old["CreatedAt"]
    # an agent volume labelled with another data volume's identity is refused
    engine.text("volume", "rm", "vmlab-vol2-agent")
    engine.text("volume", "create", "--label", f"{labvolumes.DATA_ID_LABEL}=elsewhere", "vmlab-vol2-agent")
    with pytest.raises(HostError, match="holds the agent state of another data volume") as refused:
        labvolumes.create_missing(engine, "vol2", {}, STORE)
    assert "podman volume rm vmlab-vol2-agent" in str(refused.value.hint)


def test_a_lab_without_its_container_is_checked_only_through_the_store_it_was_launched_with(
        volumes: ContainerProvider, monkeypatch: pytest.MonkeyPatch) -> None:
    labvolumes.create_missing(volumes.engine, "vol3", {"vmlab:lab": "vol3"}, STORE)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://store-b.invalid:9000")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    with pytest.raises(BadInput, match="lab vol3 syncs through AWS_ENDPOINT_URL=http://store-a.invalid:9000; "
                                       "this shell has http://store-b.invalid:9000") as refused:
        volumes.flush_lab_data("vol3", "s3://bucket/vol3", "no-such-image")
    assert "set AWS_ENDPOINT_URL=http://store-a.invalid:9000" in str(refused.value.hint)
    assert labvolumes.inspect(volumes.engine, "vmlab-vol3-data") is not None  # nothing removed


def test_a_lone_agent_volume_has_nothing_to_check(volumes: ContainerProvider) -> None:
    """Its data volume is gone: nothing of the user's is left to lose, so no flush (and no image) is needed."""
    labvolumes.create_missing(volumes.engine, "vol4", {"vmlab:lab": "vol4"}, STORE)
    volumes.engine.text("volume", "rm", "vmlab-vol4-data")
    assert not volumes.flush_lab_data("vol4", "s3://bucket/vol4", "no-such-image").unsynced
    volumes.remove_lab_data("vol4")
    assert volumes.lab_data_tags("vol4") is None


def test_a_paused_lab_is_not_checked(volumes: ContainerProvider, lab_image: str) -> None:
    """Its agent could still write the state a check would read: refused until it has stopped."""
    labvolumes.create_missing(volumes.engine, "vol5", {"vmlab:lab": "vol5"}, STORE)
    volumes.engine.text("run", "-d", "--name", "vol5", "--network", "none", "-v", "vmlab-vol5-agent:/a",
                        "--entrypoint", "sleep", lab_image, "600")
    if volumes.engine.call("pause", "vol5").returncode != 0:
        pytest.skip("podman cannot pause here (no cgroup freezer)")
    with pytest.raises(LabNotStopped, match="lab vol5's container is paused"):
        volumes.flush_lab_data("vol5", "s3://bucket/vol5", lab_image)
