"""Pure logic of the local (QEMU) provider: argv, seed content, metadata, errors. No VM is booted."""

from __future__ import annotations

import email
import json
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from vmlab.errors import BadInput, HostError, VmlabError
from vmlab.providers import debian
from vmlab.providers.base import Image, LaunchSpec, match_tags
from vmlab.providers.local import accel, baseimage, qemu, seed, store
from vmlab.providers.local.images import ImageShelf
from vmlab.providers.local.provider import LocalProvider

PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH0cPs0ZxRG0dkMY73Yq0McbuxFqiIS6AQMu6GsYRHFK user@host"
CERT_A = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"
CERT_B = "-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----"


def ed25519_key() -> tuple[str, str]:
    key = ed25519.Ed25519PrivateKey.generate()
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption()).decode()
    pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return priv, pub.decode()


def base_cfg(**kw: object) -> dict[str, object]:
    args: dict[str, object] = {"user": "admin", "ssh_public_key": PUB, "host_key": None, "ca_certs": [],
                               "proxy": {}}
    args.update(kw)
    return seed.cloud_config(**args)  # type: ignore[arg-type]


# ---- qemu argv ---------------------------------------------------------------------------------------------
def test_argv_forwards_ssh_on_loopback_only(tmp_path: Path) -> None:
    files = qemu.VmFiles(tmp_path / "vm")
    argv = qemu.qemu_argv(files, qemu.Boot(tmp_path / "k", tmp_path / "i", "tcg"), name="lvm-1", port=2222)
    netdev = argv[argv.index("-netdev") + 1]
    assert re.findall(r"hostfwd=tcp:([^:]*):", netdev) == ["127.0.0.1"]
    assert "hostfwd=tcp:127.0.0.1:2222-:22" in netdev
    assert "guestfwd" not in " ".join(argv)


def test_argv_daemonizes_with_files_in_the_vm_dir(tmp_path: Path) -> None:
    files = qemu.VmFiles(tmp_path / "vm")
    argv = qemu.qemu_argv(files, qemu.Boot(tmp_path / "k", tmp_path / "i", "tcg"), name="x", port=2222,
                          memory_mb=1024, cpus=1)
    assert "-daemonize" in argv
    assert argv[argv.index("-pidfile") + 1] == str(files.pid)
    assert argv[argv.index("-serial") + 1] == f"file:{files.serial}"
    assert argv[argv.index("-qmp") + 1] == f"unix:{files.qmp},server=on,wait=off"
    assert argv[argv.index("-m") + 1] == "1024" and argv[argv.index("-smp") + 1] == "1"
    drives = [argv[i + 1] for i, a in enumerate(argv) if a == "-drive"]
    assert drives[0].startswith(f"file={files.disk},") and "format=qcow2" in drives[0]
    assert drives[1].startswith(f"file={files.seed},") and "readonly=on" in drives[1]
    assert "-nographic" not in argv  # incompatible with -daemonize


def test_argv_without_seed(tmp_path: Path) -> None:
    files = qemu.VmFiles(tmp_path)
    argv = qemu.qemu_argv(files, qemu.Boot(tmp_path / "k", tmp_path / "i"), name="x", port=2222, seed=False)
    assert str(files.seed) not in " ".join(argv)


def test_accelerator_arguments_and_cmdline() -> None:
    assert qemu.accel_args("kvm") == ["-accel", "kvm", "-cpu", "host"]
    assert qemu.accel_args("tcg")[:2] == ["-accel", "tcg,thread=multi"]
    assert "mitigations=off" in qemu.kernel_cmdline("tcg")
    assert "mitigations=off" not in qemu.kernel_cmdline("kvm")
    assert qemu.kernel_cmdline("kvm").startswith("root=/dev/vda rw console=ttyS0")
    with pytest.raises(BadInput):
        qemu.accel_args("hvf")


def test_bad_port_and_long_socket_path(tmp_path: Path) -> None:
    with pytest.raises(BadInput):
        qemu.hostfwd(0)
    deep = qemu.VmFiles(tmp_path / ("d" * 120))
    with pytest.raises(HostError, match="too long"):
        qemu.qemu_argv(deep, qemu.Boot(tmp_path / "k", tmp_path / "i"), name="x", port=2222)


def test_port_free_sees_a_listener() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert not qemu.port_free(s.getsockname()[1])
    assert qemu.port_free(qemu.free_port())


def test_read_pid_ignores_foreign_and_missing_processes(tmp_path: Path) -> None:
    files = qemu.VmFiles(tmp_path)
    assert qemu.read_pid(files) is None
    files.pid.write_text(str(os.getpid()))  # alive, but not this VM's QEMU
    assert qemu.read_pid(files) is None
    files.pid.write_text("garbage")
    assert qemu.read_pid(files) is None


def test_serial_tail(tmp_path: Path) -> None:
    files = qemu.VmFiles(tmp_path)
    assert qemu.serial_tail(files) == "(no serial log)"
    files.serial.write_text("\n".join(f"line {i}\r" for i in range(40)))
    assert qemu.serial_tail(files, 3) == "line 37\nline 38\nline 39"


# ---- seed --------------------------------------------------------------------------------------------------
def test_default_user_has_key_and_passwordless_sudo() -> None:
    text = seed.render_user_data(base_cfg(), None)
    assert text.startswith("#cloud-config\n")
    cfg = yaml.safe_load(text)
    (user,) = cfg["users"]
    assert user["name"] == "admin" and user["sudo"] == "ALL=(ALL) NOPASSWD:ALL"
    assert user["ssh_authorized_keys"] == [PUB] and user["lock_passwd"] is True
    assert cfg["ssh_pwauth"] is False and cfg["apt"]["preserve_sources_list"] is True
    assert "ssh_keys" not in cfg


def test_pinned_host_key_public_half_is_derived() -> None:
    priv, pub = ed25519_key()
    cfg = yaml.safe_load(seed.render_user_data(base_cfg(host_key=priv), None))
    assert cfg["ssh_keys"]["ed25519_public"] == pub
    assert cfg["ssh_keys"]["ed25519_private"].strip() == priv.strip()


def test_rsa_pem_host_key() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption()).decode()
    assert set(seed.host_key_entries(pem)) == {"rsa_private", "rsa_public"}


def test_bad_keys_are_bad_input() -> None:
    with pytest.raises(BadInput):
        seed.host_key_entries("not a key")
    with pytest.raises(BadInput):
        base_cfg(ssh_public_key="")


def test_extra_ca_certs_are_the_ones_the_guest_lacks() -> None:
    host = f"{CERT_A}\n{CERT_B}\n{CERT_B}\n"
    assert seed.extra_ca_certs(host, CERT_A + "\n") == [CERT_B]
    assert seed.extra_ca_certs(host, None) == [CERT_A, CERT_B]
    assert seed.extra_ca_certs(host, host) == []


def test_ca_certs_go_to_the_trust_store_without_update_ca_certificates() -> None:
    cfg = yaml.safe_load(seed.render_user_data(base_cfg(ca_certs=[CERT_B]), None))
    paths = {f["path"]: f for f in cfg["write_files"]}
    assert paths["/usr/local/share/ca-certificates/vmlab-host-0.crt"]["content"].strip() == CERT_B
    bundle = paths["/etc/ssl/certs/ca-certificates.crt"]
    assert bundle["append"] is True and CERT_B in bundle["content"]
    assert "cert = /etc/ssl/certs/ca-certificates.crt" in paths["/etc/pip.conf"]["content"]
    assert "ca_certs" not in cfg


def test_proxy_env_rewritten_for_the_guest() -> None:
    env = {"HTTP_PROXY": "http://127.0.0.1:3128", "https_proxy": "http://user:pw@localhost:3129/",
           "no_proxy": "localhost,.corp"}
    out = seed.proxy_env(env)
    assert out == {"http_proxy": "http://10.0.2.2:3128", "https_proxy": "http://user:pw@10.0.2.2:3129/",
                   "no_proxy": "localhost,.corp"}
    assert seed.proxy_env({"http_proxy": "http://proxy.corp:8080"}) == {"http_proxy": "http://proxy.corp:8080"}
    assert seed.proxy_env({}) == {}
    cfg = yaml.safe_load(seed.render_user_data(base_cfg(proxy=out), None))
    assert cfg["apt"]["http_proxy"] == "http://10.0.2.2:3128"
    env_file = next(f for f in cfg["write_files"] if f["path"] == "/etc/environment")
    assert "https_proxy=http://user:pw@10.0.2.2:3129/" in env_file["content"]
    assert "NO_PROXY=localhost,.corp" in env_file["content"]
    # between the markers the bake's scrub removes (the proxy's credentials must not reach an image)
    lines = env_file["content"].splitlines()
    assert lines[0] == seed.ENV_BEGIN and lines[-1] == seed.ENV_END and env_file["append"] is True


def test_caller_cloud_config_is_merged() -> None:
    extra = "#cloud-config\nruncmd: [[touch, /x]]\nwrite_files:\n- {path: /y, content: hi}\napt: {conf: z}\n"
    cfg = yaml.safe_load(seed.render_user_data(base_cfg(), extra))
    assert cfg["runcmd"] == [["touch", "/x"]]
    assert [f["path"] for f in cfg["write_files"]][-1] == "/y"
    assert "/etc/pip.conf" in [f["path"] for f in cfg["write_files"]]
    assert cfg["apt"] == {"preserve_sources_list": True, "conf": "z"}
    assert cfg["users"][0]["name"] == "admin"


def test_caller_script_rides_in_multipart() -> None:
    text = seed.render_user_data(base_cfg(), "#!/bin/sh\necho hi\n")
    msg = email.message_from_string(text)
    parts = [p for p in msg.walk() if not p.is_multipart()]
    assert [p.get_content_type() for p in parts] == ["text/cloud-config", "text/x-shellscript"]
    assert yaml.safe_load(parts[0].get_payload())["users"][0]["name"] == "admin"
    assert parts[1].get_payload().startswith("#!/bin/sh")


@pytest.mark.parametrize("bad", ["#cloud-config\n: [", "#cloud-config\n- a\n", "just text"])
def test_bad_user_data(bad: str) -> None:
    with pytest.raises(BadInput):
        seed.render_user_data(base_cfg(), bad)


def test_meta_data_and_hostname() -> None:
    meta = yaml.safe_load(seed.meta_data("iid-1", "My Lab_2!"))
    assert meta == {"instance-id": "iid-1", "local-hostname": "my-lab-2"}
    assert seed.hostname_for("___") == "vmlab"
    assert len(seed.hostname_for("a" * 100)) == 63


# ---- metadata ----------------------------------------------------------------------------------------------
def vm_record(**kw: object) -> store.VmRecord:
    args: dict[str, object] = {"id": "lvm-0123456789ab", "name": "t", "image": "debian-12", "port": 2222,
                               "created": "2024-01-01T00:00:00+00:00", "backing": "/b", "kernel": "/k",
                               "initrd": "/i", "tags": {"vmlab:run": "r1"}}
    args.update(kw)
    return store.VmRecord(**args)  # type: ignore[arg-type]


def test_vm_record_round_trip(tmp_path: Path) -> None:
    rec = vm_record()
    store.write_vm(tmp_path, rec)
    assert store.read_vm(tmp_path) == rec
    assert (tmp_path / store.VM_META).stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("patch", [{"port": "22"}, {"tags": {"a": 1}}, {"port": True}])
def test_vm_record_types_checked(patch: dict[str, object]) -> None:
    data = {**store.asdict(vm_record()), **patch}
    with pytest.raises(VmlabError):
        store.vm_from_dict(data)


def test_vm_record_missing_field_and_damaged_file(tmp_path: Path) -> None:
    with pytest.raises(VmlabError, match="missing"):
        store.vm_from_dict({"id": "lvm-1"})
    (tmp_path / store.VM_META).write_text("{nope")
    with pytest.raises(VmlabError, match="unreadable"):
        store.read_vm(tmp_path)


def test_image_metadata_parsing() -> None:
    img = Image(id="limg-abcdef", name="n", state="available", provider="local", tags={"k": "v"},
                shared_with=("123456789012",), size_bytes=5)
    assert store.image_from_dict(store.image_to_dict(img)) == img
    with pytest.raises(VmlabError):
        store.image_from_dict({"id": "limg-abcdef", "name": "n", "state": "available", "size_bytes": "5"})
    with pytest.raises(VmlabError):
        store.image_from_dict({"id": "limg-abcdef", "state": "available"})


def test_match_tags() -> None:
    assert match_tags({"a": "1", "b": "2"}, {"a": "1"})
    assert match_tags({"a": "1"}, None)
    assert not match_tags({"a": "1"}, {"a": "2"})
    assert match_tags({"a": "1"}, {"a": "*"})
    assert not match_tags({"b": "1"}, {"a": "*"})


# ---- images ------------------------------------------------------------------------------------------------
def fake_image(root: Path, image_id: str, name: str, tags: dict[str, str] | None = None) -> Path:
    path = root / "images" / image_id
    path.mkdir(parents=True)
    store.write_image(path, Image(id=image_id, name=name, state="available", provider="local",
                                  tags=tags or {}))
    return path


def test_image_lookup_share_and_delete(tmp_path: Path) -> None:
    fake_image(tmp_path, "limg-aaaaaa", "one", {"vmlab:recipe-hash": "h1"})
    fake_image(tmp_path, "limg-bbbbbb", "dup")
    fake_image(tmp_path, "limg-cccccc", "dup")
    (tmp_path / "images" / ".tmp-limg-dddddd").mkdir()  # half-built: never listed
    provider = LocalProvider(tmp_path)
    assert [i.id for i in provider.list_images()] == ["limg-aaaaaa", "limg-bbbbbb", "limg-cccccc"]
    assert [i.id for i in provider.list_images({"vmlab:recipe-hash": "h1"})] == ["limg-aaaaaa"]
    assert provider.describe_image("one").id == "limg-aaaaaa"  # type: ignore[union-attr]
    assert provider.describe_image("nope") is None
    assert provider.describe_image("debian-12") is None  # base not built here
    with pytest.raises(BadInput, match="ambiguous"):
        provider.describe_image("dup")
    shared = provider.share_image("limg-aaaaaa", ("123456789012", "210987654321"))
    assert shared.shared_with == ("123456789012", "210987654321")
    assert provider.share_image("limg-aaaaaa", ("123456789012",), remove=True).shared_with == ("210987654321",)
    assert provider.describe_image("limg-aaaaaa").shared_with == ("210987654321",)  # type: ignore[union-attr]
    with pytest.raises(BadInput, match="account"):
        provider.share_image("limg-aaaaaa", ("12345",))
    with pytest.raises(BadInput):
        provider.delete_image("debian-12")
    store.write_vm(tmp_path / "vms" / "lvm-0123456789ab" if (tmp_path / "vms" / "lvm-0123456789ab").mkdir(
        parents=True) is None else tmp_path, vm_record(image="limg-aaaaaa"))
    with pytest.raises(BadInput, match="terminate"):
        provider.delete_image("limg-aaaaaa")
    provider.delete_image("limg-bbbbbb")
    assert not (tmp_path / "images" / "limg-bbbbbb").exists()
    with pytest.raises(BadInput):
        provider.delete_image("limg-bbbbbb")


def test_create_refuses_duplicate_names(tmp_path: Path) -> None:
    fake_image(tmp_path, "limg-aaaaaa", "one")
    shelf = ImageShelf(tmp_path)
    with pytest.raises(BadInput, match="already exists"):
        shelf.create(shelf.files("limg-aaaaaa"), tmp_path / "d.qcow2", "one", {}, "lvm-x", lambda m, f: None)


# ---- provider without VMs ----------------------------------------------------------------------------------
def test_instances_from_records(tmp_path: Path) -> None:
    provider = LocalProvider(tmp_path)
    for vm_id, tags in (("lvm-0000000000a1", {"vmlab:run": "r1"}), ("lvm-0000000000b2", {"vmlab:run": "r2"})):
        (tmp_path / "vms" / vm_id).mkdir(parents=True)
        store.write_vm(tmp_path / "vms" / vm_id, vm_record(id=vm_id, tags=tags, state="running"))
    (tmp_path / "vms" / "lvm-0000000000c3").mkdir()
    (tmp_path / "vms" / "lvm-0000000000c3" / store.VM_META).write_text("[]")  # damaged: skipped
    insts = provider.list_instances()
    assert [i.id for i in insts] == ["lvm-0000000000a1", "lvm-0000000000b2"]
    assert {i.state for i in insts} == {"stopped"}  # no QEMU process behind them
    assert insts[0].host == "127.0.0.1" and insts[0].user == "admin" and insts[0].port == 2222
    assert [i.id for i in provider.list_instances({"vmlab:run": "r2"})] == ["lvm-0000000000b2"]
    assert provider.describe("lvm-ffffffffffff") is None
    with pytest.raises(BadInput):
        provider.describe("../../etc")
    provider.terminate("lvm-ffffffffffff")  # gone already: no-op
    provider.terminate("lvm-0000000000a1")
    assert not (tmp_path / "vms" / "lvm-0000000000a1").exists()
    with pytest.raises(BadInput):
        provider.stop("lvm-0000000000a1")


def test_wait_booted_fails_fast_with_console_tail(tmp_path: Path) -> None:
    provider = LocalProvider(tmp_path)
    vm_dir = tmp_path / "vms" / "lvm-0000000000a1"
    vm_dir.mkdir(parents=True)
    store.write_vm(vm_dir, vm_record(id="lvm-0000000000a1"))
    (vm_dir / "serial.log").write_text("Kernel panic - not syncing: VFS: Unable to mount root fs\n")
    with pytest.raises(HostError) as err:
        provider.wait_booted("lvm-0000000000a1", timeout=60)
    assert "Kernel panic" in str(err.value)


def spec(image: str = "debian-12", **kw: object) -> LaunchSpec:
    return LaunchSpec(name="t", image=image, ssh_public_key=PUB, **kw)  # type: ignore[arg-type]


needs_qemu_img = pytest.mark.skipif(shutil.which("qemu-img") is None or shutil.which("genisoimage") is None,
                                    reason="qemu-utils/genisoimage not installed")


@needs_qemu_img
def test_launch_errors_leave_nothing_behind(tmp_path: Path) -> None:
    provider = LocalProvider(tmp_path)
    with pytest.raises(BadInput, match="no local image"):
        provider.launch(spec("limg-123456"))
    good = fake_image(tmp_path, "limg-abcdef", "good")
    for name in ("vmlinuz", "initrd.img"):
        (good / name).write_bytes(b"x")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(good / "disk.qcow2"), "1M"], check=True)
    corrupt = fake_image(tmp_path, "limg-badbad", "corrupt")
    shutil.copytree(good, corrupt, dirs_exist_ok=True)
    store.write_image(corrupt, Image(id="limg-badbad", name="corrupt", state="available", provider="local"))
    with open(corrupt / "disk.qcow2", "r+b") as fh:
        fh.truncate(64)  # header cut short: qemu-img cannot open it
    with pytest.raises(VmlabError, match="unreadable|corrupt"):
        provider.launch(spec("corrupt"))
    with pytest.raises(BadInput, match="user_data"):
        provider.launch(spec("good", user_data="plain words"))
    with pytest.raises(BadInput, match="smaller"):
        provider.launch(spec("good", volume_size_gb=0))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(BadInput, match="in use"):
            provider.launch(spec("limg-abcdef"), port=s.getsockname()[1])
    assert not (tmp_path / "vms").exists() or list((tmp_path / "vms").iterdir()) == []


# ---- accelerator -------------------------------------------------------------------------------------------
def test_accel_override_and_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VMLAB_LOCAL_ACCEL", "tcg")
    assert accel.detect(tmp_path, tmp_path / "k").name == "tcg"
    monkeypatch.setenv("VMLAB_LOCAL_ACCEL", "xen")
    with pytest.raises(BadInput):
        accel.detect(tmp_path, tmp_path / "k")
    monkeypatch.delenv("VMLAB_LOCAL_ACCEL")
    monkeypatch.setattr(accel, "host_fingerprint", lambda: "fp")
    (tmp_path / accel.CACHE_FILE).write_text(json.dumps({"accel": "kvm", "host": "fp", "reason": "probe ok"}))
    assert accel.detect(tmp_path, tmp_path / "k").name == "kvm"
    # another host fingerprint: probe again; a missing /dev/kvm means TCG without booting anything
    monkeypatch.setattr(accel, "host_fingerprint", lambda: "other")
    monkeypatch.setattr(accel, "kvm_device_usable", lambda: (False, "/dev/kvm: No such file"))
    choice = accel.detect(tmp_path, tmp_path / "k")
    assert choice == accel.Accel("tcg", "/dev/kvm: No such file")
    assert json.loads((tmp_path / accel.CACHE_FILE).read_text())["accel"] == "tcg"


def test_kvm_probe_argv_cannot_reboot_or_hang(tmp_path: Path) -> None:
    argv = accel.probe_argv(tmp_path / "vmlinuz")
    assert "-no-reboot" in argv and "panic=-1" in argv[argv.index("-append") + 1]
    assert accel.kvm_device_usable(str(tmp_path / "missing"))[0] is False


# ---- base image --------------------------------------------------------------------------------------------
def test_version_tag_tracks_the_recipe() -> None:
    assert baseimage.version_tag("http://a") == baseimage.version_tag("http://a")
    assert baseimage.version_tag("http://a") != baseimage.version_tag("http://b")


def test_check_host_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda tool: None if tool == "debootstrap" else "/usr/bin/x")
    with pytest.raises(BadInput, match="apt-get install"):
        baseimage.check_host(tmp_path)
    monkeypatch.setattr(shutil, "which", lambda tool: "/usr/bin/x")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(BadInput, match="run as root"):
        baseimage.check_host(tmp_path)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    keyring = tmp_path / "debian-archive-keyring.gpg"
    keyring.write_bytes(b"k")
    monkeypatch.setenv("VMLAB_DEBIAN_KEYRING", str(keyring))
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10, 9, 1))  # type: ignore[attr-defined]
    with pytest.raises(BadInput, match="3 GB"):
        baseimage.check_host(tmp_path)


def test_check_host_requires_the_archive_keyring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a keyring debootstrap would only warn and install whatever a plain-http mirror served."""
    monkeypatch.setattr(shutil, "which", lambda tool: "/usr/bin/x")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setenv("VMLAB_DEBIAN_KEYRING", str(tmp_path / "missing.gpg"))
    with pytest.raises(BadInput) as err:
        baseimage.check_host(tmp_path)
    assert "no Debian archive keyring at" in str(err.value) and "apt-get install debian-archive-keyring" in str(
        err.value)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "base").exists()  # refused before anything was made


def test_debootstrap_verifies_signatures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VMLAB_DEBIAN_KEYRING", raising=False)
    argv = debian.DEBIAN_12.debootstrap_argv(tmp_path / "rootfs", "http://deb.debian.org/debian",
                                             debian.DEBIAN_12.keyring(tmp_path), baseimage.PACKAGES)
    assert "--force-check-gpg" in argv and "--no-check-gpg" not in argv
    assert "--keyring=/usr/share/keyrings/debian-archive-keyring.gpg" in argv
    assert argv[-3:] == ["bookworm", str(tmp_path / "rootfs"), "http://deb.debian.org/debian"]
    # and build() runs exactly that
    seen: list[list[str]] = []

    def fake_run(args: list[str], what: str, cwd: Path | None = None) -> str:
        seen.append(args)
        raise HostError("stop here")

    monkeypatch.setattr(debian, "run", fake_run)
    with pytest.raises(HostError):
        baseimage.build(tmp_path, lambda msg, frac: None)
    assert seen == [debian.DEBIAN_12.debootstrap_argv(tmp_path / "rootfs", debian.DEBIAN_12.mirror(),
                                                      debian.DEBIAN_12.keyring(tmp_path), baseimage.PACKAGES)]


def test_configure_rootfs(tmp_path: Path) -> None:
    root = tmp_path
    (root / "etc/ssh").mkdir(parents=True)
    for name in ("ssh_host_ed25519_key", "ssh_host_ed25519_key.pub", "sshd_config"):
        (root / "etc/ssh" / name).write_text("x")
    (root / "etc/machine-id").write_text("abc\n")
    (root / "etc/systemd/system/timers.target.wants").mkdir(parents=True)
    (root / "etc/systemd/system/timers.target.wants/apt-daily.timer").symlink_to("/lib/x")
    (root / "etc/resolv.conf").symlink_to("/run/systemd/resolve/stub-resolv.conf")
    (root / "var/cache/apt/archives").mkdir(parents=True)
    (root / "var/cache/apt/archives/a.deb").write_text("x")
    baseimage.configure_rootfs(root, "http://mirror.example/debian")
    assert sorted(p.name for p in (root / "etc/ssh").iterdir()) == ["sshd_config"]
    assert (root / "etc/machine-id").read_text() == ""
    assert os.readlink(root / "etc/systemd/system/systemd-networkd-wait-online.service") == "/dev/null"
    assert not (root / "etc/systemd/system/timers.target.wants/apt-daily.timer").exists()
    cfg = yaml.safe_load((root / "etc/cloud/cloud.cfg.d/90-vmlab.cfg").read_text())
    assert cfg["datasource_list"] == ["NoCloud", "None"]
    assert (root / "etc/resolv.conf").read_text() == "nameserver 10.0.2.3\n"
    assert "mirror.example" in (root / "etc/apt/sources.list").read_text()
    assert "ssh-keygen -A" in (root / "etc/systemd/system/ssh.service.d/10-vmlab-hostkeys.conf").read_text()
    assert not list((root / "var/cache/apt/archives").glob("*.deb"))


def test_ensure_base_image_reuses_and_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(baseimage, "check_host", lambda root: None)

    def failing_build(work: Path, progress: object) -> Image:
        (work / "rootfs").mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(baseimage, "build", failing_build)
    with pytest.raises(KeyboardInterrupt):
        baseimage.ensure_base_image(None, tmp_path)
    assert [p.name for p in (tmp_path / "base").iterdir()] == [".build.lock"]

    def good_build(work: Path, progress: object) -> Image:
        img = Image(id="debian-12", name="debian-12-x", state="available", provider="local")
        store.write_image(work, img)
        return img

    monkeypatch.setattr(baseimage, "build", good_build)
    assert baseimage.ensure_base_image(None, tmp_path).id == "debian-12"
    monkeypatch.setattr(baseimage, "build", failing_build)  # a second call must not build again
    assert baseimage.ensure_base_image(None, tmp_path).name == "debian-12-x"
    assert LocalProvider(tmp_path).describe_image("debian-12") is not None
