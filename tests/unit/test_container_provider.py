"""Pure parts of the container provider: vmlab's own podman settings, label and name checks, podman's JSON read
into Instances and Images. No engine runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmlab.agent.status import AgentStatus
from vmlab.errors import BadInput, HostError
from vmlab.providers import get_provider, implements, provider_class
from vmlab.providers.base import PlansLaunches
from vmlab.providers.capabilities import BuildsBaseImage, Executes, ScopesStorage, ServesLabs
from vmlab.providers.container import baseimage
from vmlab.providers.container.engine import Podman
from vmlab.providers.container.provider import ContainerProvider, check_labels, image_tag


def test_registered_with_its_capabilities() -> None:
    cls = provider_class("container")
    assert implements(cls, Executes) and implements(cls, PlansLaunches) and implements(cls, BuildsBaseImage)
    assert implements(cls, ServesLabs) and implements(cls, ScopesStorage)  # a lab gets the environment's keys
    assert get_provider("container").grant_storage("s3://b/p") is None  # type: ignore[attr-defined]
    assert not implements(provider_class("local"), Executes)  # SSH providers keep SSH


def test_engine_settings_are_vmlabs_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    engine = Podman(tmp_path / "engine")
    files = engine.config_files()
    assert 'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]' in files["containers.conf"]
    for line in ('cgroup_manager = "cgroupfs"', 'events_logger = "file"', 'runtime = "runc"'):
        assert line in files["containers.conf"]
    assert f'graphroot = "{tmp_path}/engine/storage"' in files["storage.conf"]
    assert "unqualified-search-registries = []" in files["registries.conf"]
    env = engine.env()
    assert env["CONTAINERS_CONF"] == f"{tmp_path}/engine/conf/containers.conf"
    assert env["CONTAINERS_STORAGE_CONF"].startswith(str(tmp_path)) and "/etc/" not in env["CONTAINERS_CONF"]
    # two roots never share a run folder
    assert Podman(tmp_path / "a").run_dir != Podman(tmp_path / "b").run_dir


def test_engine_root_with_a_control_character_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="a line break"):
        Podman(tmp_path / "bad\nroot").config_files()


def test_root_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VMLAB_CONTAINER_ROOT", str(tmp_path / "r"))
    provider = get_provider("container")
    assert isinstance(provider, ContainerProvider) and provider.engine.root == tmp_path / "r"


@pytest.mark.parametrize("tags", [{"bad key": "v"}, {"k": "line\nbreak"}, {"k": 'a"b'}, {"k": "a\\b"},
                                  {"-k": "v"}])
def test_labels_that_podman_would_misread_are_refused(tags: dict[str, str]) -> None:
    with pytest.raises(BadInput):
        check_labels(tags)


def test_labels_vmlab_writes_pass() -> None:
    check_labels({"vmlab:run": "bake-1a2b3c4d", "vmlab:packages": "apt 120, python 3, conda 0",
                  "org.opencontainers.image.created": "2026-01-01T00:00:00+00:00"})


@pytest.mark.parametrize("name", ["Upper", "a b", "-x", "x;y", "", "a" * 129])
def test_image_names_are_checked(tmp_path: Path, name: str) -> None:
    with pytest.raises(BadInput):
        ContainerProvider(tmp_path).check_image_name(name)


def test_podman_json_read_as_instance_and_image(tmp_path: Path) -> None:
    provider = ContainerProvider(tmp_path)
    inst = provider._instance({"Id": "0123456789abcdef", "Name": "b1", "State": {"Status": "exited"},
                               "ImageName": "localhost/x:1", "Created": "2026-01-01T00:00:00.123Z",
                               "Config": {"Labels": {"vmlab:run": "r"}}})
    assert (inst.id, inst.state, inst.user, inst.host, dict(inst.tags)) == ("0123456789ab", "stopped", "root", None,
                                                                          {"vmlab:run": "r"})
    image = provider._image({"Id": "fedcba9876543210", "Names": ["localhost/vmlab/lab:abc"], "Created": 0,
                             "Labels": {"vmlab:name": "lab"}, "Size": 5})
    assert (image.id, image.name, image.source, image.created) == ("fedcba987654", "lab", "localhost/vmlab/lab:abc",
                                                                   "1970-01-01T00:00:00+00:00")


@pytest.mark.parametrize("base_id", ["debian-12", "ubuntu-24.04"])
def test_base_version_tracks_packages(monkeypatch: pytest.MonkeyPatch, base_id: str) -> None:
    base = baseimage.BASES[base_id]
    tag = base.version_tag("http://a")
    assert tag == base.version_tag("http://a") != base.version_tag("http://b")
    monkeypatch.setattr(baseimage, "PACKAGES", (*baseimage.PACKAGES, "jq"))
    assert base.version_tag("http://a") != tag


def test_bases_are_kept_apart() -> None:
    """Each base has its own reference and cache folder; an unknown one is refused naming the others."""
    debian, ubuntu = baseimage.BASES["debian-12"], baseimage.BASES["ubuntu-24.04"]
    assert debian.reference().startswith("localhost/vmlab-base/debian-12:v1-")
    assert ubuntu.reference().startswith("localhost/vmlab-base/ubuntu-24.04:v1-")
    assert debian.tar_dir(Path("/c")).name.startswith("debian-12-v1-")
    assert ubuntu.tar_dir(Path("/c")).name.startswith("ubuntu-24.04-v1-")
    assert "motd-news.timer" in ubuntu.masked_units and "motd-news.timer" not in debian.masked_units
    with pytest.raises(BadInput) as err:
        baseimage.base_for("ubuntu-22.04")
    assert "'ubuntu-22.04' is no container base" in str(err.value) and "debian-12 or ubuntu-24.04" in str(err.value)


def test_image_tag_names_the_base() -> None:
    """One recipe baked under one name on two bases keeps two tagged images."""
    digest = "0123456789abcdef" * 4
    assert image_tag({"vmlab:recipe-hash": digest, "vmlab:base": "ubuntu-24.04"}) == "0123456789ab-ubuntu-24.04"
    assert image_tag({"vmlab:recipe-hash": digest, "vmlab:base": "debian-12"}) == "0123456789ab-debian-12"
    assert image_tag({"vmlab:recipe-hash": digest, "vmlab:base": "localhost/vmlab/x:1"}) == (
        "0123456789ab-localhost-vmlab-x-1")


def test_lab_container_keeps_secrets_off_the_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from vmlab.providers.capabilities import LabLaunch
    from vmlab.providers.container import labcontainer

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-key-value")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:5000")
    monkeypatch.delenv(labcontainer.HOST_LOOPBACK_ENV, raising=False)
    launch = LabLaunch("tok-" + "x" * 40, "s3://bucket/alice", 30)
    argv, env = labcontainer.run_argv("lab", "localhost/vmlab/lab:ab", 8891, launch, {"vmlab:lab": "lab"}, 15)
    words = " ".join(argv)
    assert launch.token not in words and "s3cr3t" not in words and "s3://bucket" not in words
    assert env["JUPYTER_TOKEN"] == launch.token and env["VMLAB_SYNC_URL"] == "s3://bucket/alice"
    assert ["-e", "JUPYTER_TOKEN"] == argv[argv.index("JUPYTER_TOKEN") - 1:argv.index("JUPYTER_TOKEN") + 1]
    assert "127.0.0.1:8891:8888" in argv and "vmlab-lab-data:/root/data" in argv
    assert "vmlab-lab-agent:/var/lib/vmlab-agent" in argv and "vmlab:agent-volume=vmlab-lab-agent" in argv
    assert "slirp4netns" in argv and env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5000"  # host loopback closed
    monkeypatch.setenv(labcontainer.HOST_LOOPBACK_ENV, "1")
    argv, env = labcontainer.run_argv("lab", "img", 8891, launch, {}, 15)
    assert "slirp4netns:allow_host_loopback=true" in argv and env["AWS_ENDPOINT_URL"] == "http://10.0.2.2:5000"
    no_sync = labcontainer.secret_env(LabLaunch("t" * 40), {"AWS_SECRET_ACCESS_KEY": "k"})
    assert no_sync == {"JUPYTER_TOKEN": "t" * 40}  # no sync: no credentials go in


def test_a_hub_lab_gets_the_hubs_environment_as_secrets_and_reaches_its_api(monkeypatch: pytest.MonkeyPatch) -> None:
    from vmlab.providers.capabilities import LabLaunch
    from vmlab.providers.container import labcontainer

    monkeypatch.delenv(labcontainer.HOST_LOOPBACK_ENV, raising=False)
    hub = {"JUPYTERHUB_API_TOKEN": "hub-" + "y" * 40, "JUPYTERHUB_API_URL": "http://127.0.0.1:8081/hub/api",
           "JUPYTERHUB_ACTIVITY_URL": "http://localhost:8081/hub/api/users/ana/activity",
           "JUPYTERHUB_SERVICE_PREFIX": "/user/ana/", "JUPYTERHUB_USER": "ana"}
    argv, env = labcontainer.run_argv("cls-ana", "img", 8891, LabLaunch("", None, hub_env=hub), {}, 15)
    assert "hub-" not in " ".join(argv) and "JUPYTER_TOKEN" not in env  # no token: the hub checks visitors
    assert env["JUPYTERHUB_API_TOKEN"] == hub["JUPYTERHUB_API_TOKEN"]
    assert env["JUPYTERHUB_API_URL"] == "http://10.0.2.2:8081/hub/api"  # this machine's loopback, seen inside
    assert env["JUPYTERHUB_ACTIVITY_URL"] == "http://10.0.2.2:8081/hub/api/users/ana/activity"
    assert env["JUPYTERHUB_SERVICE_URL"] == "http://0.0.0.0:8888/user/ana/"
    assert "slirp4netns:allow_host_loopback=true" in argv and argv[-2:] == ["--", "--allow-root"]
    remote = {**hub, "JUPYTERHUB_API_URL": "https://hub.example.org/hub/api", "JUPYTERHUB_ACTIVITY_URL": ""}
    argv, _ = labcontainer.run_argv("cls-ana", "img", 8891, LabLaunch("", None, hub_env=remote), {}, 15)
    assert "slirp4netns" in argv  # a hub elsewhere: the host's loopback stays closed


def test_lab_flags_a_container_cannot_honour_are_refused() -> None:
    from vmlab.providers.base import LaunchSpec

    provider = ContainerProvider(Path("/nonexistent-root"))
    with pytest.raises(BadInput, match="--type/--builder-type g4dn.xlarge does not apply"):
        provider.check_launch(LaunchSpec("lab", "img", "", instance_type="g4dn.xlarge"))


def test_labs_launched_at_once_are_given_different_ports() -> None:
    """Nothing binds the first port before the second launch asks (podman binds it a moment later)."""
    from concurrent.futures import ThreadPoolExecutor

    from vmlab.providers.container import labcontainer

    with ThreadPoolExecutor(8) as pool:
        ports = list(pool.map(lambda _i: labcontainer.free_port(start=20500, tries=50), range(8)))
    assert len(set(ports)) == 8 and all(20500 <= p < 20550 for p in ports)


@pytest.mark.parametrize("podman, utc", [
    ("2026-12-06T12:00:00.123456789+02:00", "2026-12-06T10:00:00+00:00"),   # east of UTC: not 2 h in the future
    ("2026-12-06T12:00:00.5-05:00", "2026-12-06T17:00:00+00:00"),           # west: not 5 h more of uptime
    ("2026-12-06T12:00:00Z", "2026-12-06T12:00:00+00:00"),
    ("2026-12-06T12:00:00", "2026-12-06T12:00:00+00:00"),
    ("0001-01-01T00:00:00Z", None),                                          # podman's "never started"
    ("", None),
])
def test_podman_times_are_read_with_their_offset(podman: str, utc: str | None) -> None:
    from vmlab.providers.container.engine import utc_time

    assert utc_time(podman) == utc


def test_the_flush_container_mounts_both_volumes_and_keeps_secrets_off_the_command_line() -> None:
    from vmlab.providers.container import labvolumes

    environ = {"AWS_SECRET_ACCESS_KEY": "s3cr3t-key-value", "AWS_ENDPOINT_URL": "http://127.0.0.1:5000",
               "VMLAB_CONTAINER_HOST_LOOPBACK": "1", "HOME": "/root"}
    argv, env = labvolumes.flush_argv("cls-ana", "img1", "s3://bucket/cls/ana/", environ)
    words = " ".join(argv)
    assert "s3cr3t" not in words and "s3://bucket" not in words and "HOME" not in words
    assert env == {"VMLAB_SYNC_URL": "s3://bucket/cls/ana/", "AWS_SECRET_ACCESS_KEY": "s3cr3t-key-value",
                   "AWS_ENDPOINT_URL": "http://10.0.2.2:5000"}
    assert {"vmlab-cls-ana-data:/root/data", "vmlab-cls-ana-agent:/var/lib/vmlab-agent"} <= set(argv)
    assert argv[:2] == ["run", "--rm"] and "slirp4netns:allow_host_loopback=true" in argv
    assert argv[argv.index("img1") + 1:] == ["-c", labvolumes.FLUSH, "sh", "/opt/vmlab-agent/bin/vmlab-agent",
                                             "/var/lib/vmlab-agent/status.json"]
    closed, _ = labvolumes.flush_argv("cls-ana", "img1", "s3://bucket/cls/ana/", {})
    assert "slirp4netns" in closed and "slirp4netns:allow_host_loopback=true" not in closed
    assert f"{labvolumes.FLUSH_ID_LABEL}=" in closed  # each flush labels its container with its own id
    assert labvolumes.FLUSH.lstrip().startswith('rm -f "$2"')  # a stale status is never reported


@pytest.mark.parametrize(("rc", "status", "error"), [
    (0, AgentStatus(last_sync=1.0), ""),  # synced
    (0, AgentStatus(pending=2), ""),  # unsynced, as the agent says
    (1, AgentStatus(pending=2), "boom"),  # unsynced, the failure as its error
    (1, AgentStatus(pending=2, last_error="503"), "503"),  # unsynced, the agent's own error kept
    (0, None, None),  # no status written: no proof
    (1, AgentStatus(last_sync=1.0), None),  # failed with nothing recorded as pending: no proof
    (1, None, None),
    (125, None, None),  # the image could not run
])
def test_what_a_flush_proves(rc: int, status: AgentStatus | None, error: str | None) -> None:
    from vmlab.providers.container.labvolumes import flush_result

    if error is None:
        with pytest.raises(HostError, match=rf"could not push lab ana's data to s3://b/ana \(exit {rc}: boom\)"):
            flush_result("ana", "s3://b/ana", rc, status, "boom")
        return
    assert status is not None
    unsynced = status.unsynced
    got = flush_result("ana", "s3://b/ana", rc, status, "boom")
    assert got is status and got.unsynced == unsynced and got.last_error == error


def test_store_settings_are_recorded_without_secrets() -> None:
    from vmlab.providers.container import labvolumes

    made_with = {"Labels": {labvolumes.STORE_LABEL + "AWS_ENDPOINT_URL": "http://a:9000"}}
    assert labvolumes.recorded_settings({"Labels": {}}) is None  # made before settings were recorded
    assert labvolumes.recorded_settings(made_with) == {"AWS_ENDPOINT_URL": "http://a:9000", "AWS_ENDPOINT_URL_S3": "",
                                                       "AWS_REGION": "", "AWS_DEFAULT_REGION": ""}
    assert labvolumes.store_settings({"AWS_SECRET_ACCESS_KEY": "x", "AWS_REGION": "r"}) == {
        "AWS_ENDPOINT_URL": "", "AWS_ENDPOINT_URL_S3": "", "AWS_REGION": "r", "AWS_DEFAULT_REGION": ""}


def test_the_lab_lock_is_held_per_lab(tmp_path: Path) -> None:
    import fcntl

    provider = ContainerProvider(tmp_path)
    with provider.lab_lock("ana"):
        with open(tmp_path / "locks" / "lab-ana.lock", "a") as other:  # another `down` or `up` of ana waits
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with provider.lab_lock("bob"):  # another lab does not
            pass
    with open(tmp_path / "locks" / "lab-ana.lock", "a") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released


def test_a_served_labs_flush_refuses_a_status_path_it_cannot_honour(tmp_path: Path) -> None:
    from vmlab.state import LabRecord
    from vmlab.workflows.servedlab import served_status

    record = LabRecord(name="ana", provider="container", instance_id="c1", image="img", user="root", key_file="",
                       host_key="", token="t")
    with pytest.raises(BadInput, match="lab ana is served: its agent's status is at /var/lib/vmlab-agent/status"):
        served_status(ContainerProvider(tmp_path), record, None, str(tmp_path / "status.json"), flush=True)
