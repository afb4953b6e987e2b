"""Ansible-style inventory parsing: precedence, aliases, ranges, --limit, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmlab.errors import BadInput
from vmlab.inventory import load_inventory

INVENTORY = """
all:
  vars: {user: admin, x: all}
  hosts:
    solo: {ansible_host: 127.0.0.1, ansible_port: 2200, ansible_user: ubuntu}
  children:
    gpu:
      vars: {x: gpu, key_file: ~/.ssh/lab}
      hosts:
        g[01:03]:
        box: {x: host}
      children:
        big:
          vars: {x: big}
          hosts:
            g03:
    cpu:
      vars: {x: cpu}
      hosts:
        box:
    edge:
      vars:
        ansible_ssh_common_args: "-o ProxyJump=jump@bastion:2222"
      hosts:
        e1: {ansible_ssh_private_key_file: /keys/e1, ansible_connection: local}
"""


@pytest.fixture()
def inv(tmp_path: Path):
    p = tmp_path / "inv.yaml"
    p.write_text(INVENTORY)
    return load_inventory(p)


def test_aliases_and_connection_settings(inv) -> None:
    solo = inv.hosts["solo"]
    assert (solo.host, solo.port, solo.user, solo.key_file) == ("127.0.0.1", 2200, "ubuntu", None)
    e1 = inv.hosts["e1"]
    assert (e1.key_file, e1.proxy_jump, e1.connection) == ("/keys/e1", "jump@bastion:2222", "local")


def test_precedence_host_over_child_over_parent(inv) -> None:
    assert inv.hosts["solo"].vars["x"] == "all"
    assert inv.hosts["g01"].vars["x"] == "gpu"
    assert inv.hosts["g03"].vars["x"] == "big"  # deeper group wins
    assert inv.hosts["box"].vars["x"] == "host"  # host vars win over every group
    assert inv.hosts["g01"].key_file == "~/.ssh/lab" and inv.hosts["g01"].user == "admin"


def test_ranges_groups_and_limit(inv) -> None:
    assert [h for h in inv.hosts if h.startswith("g")] == ["g01", "g02", "g03"]
    assert [h.name for h in inv.select("gpu")] == ["g01", "g02", "g03", "box"]
    assert [h.name for h in inv.select("big,solo")] == ["solo", "g03"]
    assert len(inv.select(None)) == 6
    assert set(inv.hosts["box"].groups) == {"gpu", "cpu"}


def test_unknown_limit_names_the_choices(inv) -> None:
    with pytest.raises(BadInput, match="--limit nope: no host or group of that name") as e:
        inv.select("nope")
    assert "gpu" in str(e.value)


@pytest.mark.parametrize("text, message", [
    ("all:\n  hosts: [a, b]\n", "hosts must be a mapping"),
    ("all:\n  hosts:\n    a: {ansible_port: abc}\n", "port 'abc' is not a number"),
    ("all:\n  hosts:\n    a: {ansible_port: 70000}\n", "out of range"),
    ("all:\n  hsts: {}\n", "unknown key 'hsts'"),
    ("all:\n  hosts:\n    a: {x: [1\n", "inv.yaml:4: not valid YAML"),
    ("- a\n- b\n", "a mapping with an `all` group"),
    ("all:\n  hosts:\n    a: {ansible_connection: winrm}\n", "connection 'winrm' is not supported"),
])
def test_malformed_inventories_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "inv.yaml"
    p.write_text(text)
    with pytest.raises(BadInput, match=message) as e:
        load_inventory(p)
    assert "\n" not in str(e.value) and str(p) in str(e.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="cannot read inventory"):
        load_inventory(tmp_path / "none.yaml")


def test_example_inventory_parses() -> None:
    example = Path(__file__).resolve().parents[2] / "inventory.example.yaml"
    inv = load_inventory(example)
    assert inv.hosts, "the example inventory documents at least one host"
