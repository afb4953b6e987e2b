"""`vmlab ssh-config`: the Host entries are what OpenSSH itself reads (`ssh -G`), `ssh NAME true` works through
them against a real sshd, and `--install` adds one Include line to ~/.ssh/config however often it runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.emulators.sshd import SSHD
from vmlab.state import LabRecord, LabStore

pytestmark = pytest.mark.sshd

REPO = Path(__file__).resolve().parents[2]


def record(sshd: SSHD, name: str, **overrides: object) -> LabRecord:
    fields: dict[str, object] = dict(
        name=name, provider="local", instance_id=f"lvm-{name:0>12}"[:16], image="limg-000000", user=sshd.user,
        key_file=str(sshd.client_key), host_key=sshd.host_key_pub, token="t", host=sshd.host, port=sshd.port)
    fields.update(overrides)
    rec = LabRecord(**fields)  # type: ignore[arg-type]
    LabStore().put(rec)
    return rec


def vmlab(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "vmlab", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "HOME": str(home)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def ssh_g(config: Path, host: str) -> dict[str, str]:
    out = subprocess.run(["ssh", "-G", "-F", str(config), host], capture_output=True, text=True, check=True)
    return dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)


def test_entries_parse_with_ssh_g_and_ssh_name_works(sshd: SSHD, tmp_path: Path) -> None:
    # a key path with a space and a '%' (an ssh_config token character) must survive quoting
    odd = tmp_path / "my keys" / "lab%1"
    odd.parent.mkdir()
    shutil.copy(sshd.client_key, odd)
    odd.chmod(0o600)
    record(sshd, "lab", key_file=str(odd))
    record(sshd, "other")
    record(sshd, "sleeping", host=None)
    proc = vmlab("ssh-config", home=tmp_path)
    assert "sleeping" in proc.stdout  # reported as skipped
    config = Path(os.environ["VMLAB_STATE_DIR"]) / "ssh_config"
    assert config.stat().st_mode & 0o777 == 0o600
    got = ssh_g(config, "lab")
    assert got["hostname"] == sshd.host and got["port"] == str(sshd.port) and got["user"] == sshd.user
    # `ssh -G` shows IdentityFile before token expansion; the `ssh lab` below proves `%%` becomes `%` again
    assert got["identityfile"] == str(odd).replace("%", "%%") and got["identitiesonly"] == "yes"
    assert got["hostkeyalias"] == "vmlab-lvm-000000000lab"
    assert got["stricthostkeychecking"] == "true"  # how `ssh -G` spells "yes"
    assert got["userknownhostsfile"] == str(LabStore().known_hosts_path("lab"))
    assert "Host sleeping" not in config.read_text()
    for name in ("lab", "other"):
        run = subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes", name, "echo", "hi", name],
                             capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        assert run.returncode == 0 and run.stdout == f"hi {name}\n", run.stderr


def test_a_removed_lab_loses_its_entry(sshd: SSHD, tmp_path: Path) -> None:
    record(sshd, "lab")
    record(sshd, "old")
    vmlab("ssh-config", home=tmp_path)
    LabStore().delete("old")
    vmlab("ssh-config", home=tmp_path)
    text = (Path(os.environ["VMLAB_STATE_DIR"]) / "ssh_config").read_text()
    assert "Host lab\n" in text and "Host old" not in text


def test_wrong_host_key_is_refused_through_the_entry(sshd: SSHD, tmp_path: Path) -> None:
    from harness.emulators.sshd import make_keypair, public_key_line

    record(sshd, "lab", host_key=public_key_line(make_keypair(tmp_path, "impostor")))
    vmlab("ssh-config", home=tmp_path)
    config = Path(os.environ["VMLAB_STATE_DIR"]) / "ssh_config"
    run = subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes", "lab", "true"], capture_output=True,
                         text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert run.returncode == 255 and "Host key verification failed" in run.stderr


def test_install_adds_one_include_line_at_the_top(sshd: SSHD, tmp_path: Path) -> None:
    record(sshd, "lab")
    user_config = tmp_path / ".ssh" / "config"
    user_config.parent.mkdir()
    mine = "Host lab\n    HostName 192.0.2.1\n\nHost *\n    ServerAliveInterval 60\n"
    user_config.write_text(mine)
    user_config.chmod(0o644)
    first = vmlab("ssh-config", "--install", home=tmp_path)
    assert "added `Include" in first.stdout
    second = vmlab("ssh-config", "--install", "--json", home=tmp_path)
    assert '"included": false' in second.stdout
    text = user_config.read_text()
    vmlab_config = Path(os.environ["VMLAB_STATE_DIR"]) / "ssh_config"
    assert text.count("Include") == 1 and text.startswith("# vmlab labs")
    assert text.splitlines()[1] == f"Include {vmlab_config}"
    assert text.endswith(mine) and user_config.stat().st_mode & 0o777 == 0o644
    # vmlab's entry comes first, so it wins over the user's older `Host lab`; ssh through the user's config
    assert ssh_g(user_config, "lab")["hostname"] == sshd.host
    run = subprocess.run(["ssh", "-F", str(user_config), "-o", "BatchMode=yes", "lab", "true"],
                         capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stderr


def test_install_creates_ssh_dir_and_follows_a_symlinked_config(tmp_path: Path) -> None:
    home = tmp_path / "home"
    vmlab("ssh-config", "--install", home=home)
    assert (home / ".ssh").stat().st_mode & 0o777 == 0o700
    assert (home / ".ssh" / "config").stat().st_mode & 0o777 == 0o600
    dotfiles = tmp_path / "dotfiles_ssh_config"
    dotfiles.write_text("Host *\n")
    other = tmp_path / "home2"
    (other / ".ssh").mkdir(parents=True)
    (other / ".ssh" / "config").symlink_to(dotfiles)
    vmlab("ssh-config", "--install", home=other)
    assert (other / ".ssh" / "config").is_symlink() and "Include" in dotfiles.read_text()


class Provider:
    """Just enough of a provider for `up`/`down`: one image, instances that all answer at the test sshd."""

    name = "local"

    def __init__(self, sshd: SSHD) -> None:
        from vmlab.providers.base import Image

        self.sshd = sshd
        self.image = Image(id="limg-000000", name="lab-image", state="available", provider="local",
                           tags={"vmlab:recipe-hash": "x"})
        self.instances: dict[str, object] = {}

    def list_images(self, tags: dict[str, str]) -> list[object]:
        return [self.image]

    def list_instances(self, tags: dict[str, str]) -> list[object]:
        return [i for i in self.instances.values() if tags.get("vmlab:lab") in ("*", i.tags["vmlab:lab"])]  # type: ignore[attr-defined]

    def launch(self, spec: object) -> object:
        from vmlab.providers.base import Instance

        inst = Instance(id=f"lvm-{len(self.instances):012d}", name=spec.name, state="running",  # type: ignore[attr-defined]
                        host=self.sshd.host, port=self.sshd.port, user=self.sshd.user, image=self.image.id,
                        provider="local", tags=dict(spec.tags))  # type: ignore[attr-defined]
        self.instances[inst.id] = inst
        return inst

    def describe(self, instance_id: str) -> object:
        return self.instances.get(instance_id)

    def terminate(self, instance_id: str) -> None:
        self.instances.pop(instance_id, None)


def test_up_and_down_refresh_an_existing_config(sshd: SSHD, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Launching or removing a lab rewrites vmlab's SSH config when the user has one; no file appears otherwise.
    (Starting JupyterLab is replaced: this test is about the records and the config.)"""
    from vmlab.workflows import labpower, labs

    monkeypatch.setattr(labs, "_start_server", lambda *args, **kwargs: None)
    for module in (labs, labpower):  # up's clean-up, down
        monkeypatch.setattr(module, "terminate", lambda provider, instance_id: provider.terminate(instance_id))
    provider = Provider(sshd)
    config = Path(os.environ["VMLAB_STATE_DIR"]) / "ssh_config"
    labs.up(provider, "first")  # type: ignore[arg-type]
    assert not config.exists()
    vmlab("ssh-config", home=tmp_path)
    labs.up(provider, "second")  # type: ignore[arg-type]
    text = config.read_text()
    assert "Host first\n" in text and "Host second\n" in text
    assert ssh_g(config, "second")["port"] == str(sshd.port)
    labpower.down(provider, "first")  # type: ignore[arg-type]
    text = config.read_text()
    assert "Host first" not in text and "Host second\n" in text
