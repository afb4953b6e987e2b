"""An IPv6 zone (`%eth0`) in a lab's address reaches ssh as written: `%` is escaped in HostName."""

from __future__ import annotations

import subprocess
from pathlib import Path

from vmlab import keys
from vmlab.state import LabRecord
from vmlab.workflows.sshconfig import entry


def test_a_percent_in_the_address_is_not_an_ssh_token(tmp_path: Path) -> None:
    record = LabRecord(name="lab1", provider="local", instance_id="i-1", image="img", user="ubuntu",
                       key_file=str(tmp_path / "key"), host_key=keys.generate("h").public, token="",
                       host="fe80::1%eth0")
    config = tmp_path / "ssh_config"
    config.write_text(entry(record))
    shown = subprocess.run(["ssh", "-G", "-F", str(config), "lab1"], capture_output=True, text=True, timeout=30)
    assert "hostname fe80::1%eth0\n" in shown.stdout, shown.stderr


def test_the_host_key_rotation_reports_a_failed_sshd_reload() -> None:
    from vmlab.workflows.connect import ROTATE_HOST_KEY, reload_status

    assert "|| true" not in ROTATE_HOST_KEY and 'echo "reload-exit=$reload"' in ROTATE_HOST_KEY
    assert reload_status(["reload-exit=5", "ssh-ed25519 AAAA"]) == "5" and reload_status(["ssh-ed25519 A"]) == "?"
