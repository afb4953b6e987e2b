"""Ansible's YAML inventories, read as Ansible reads them (see docs/inventory.md).

    all:
      vars: {ansible_user: admin}
      children:
        gpu:
          vars: {ansible_ssh_private_key_file: ~/.ssh/lab}
          hosts:
            gpu[01:02].example.org:
            box: {ansible_host: 10.1.2.3, ansible_port: 2222}

Example::

    inv = load_inventory("inventory.yaml")
    for host in select_hosts(inv, "gpu:!box"):
        print(host.name, host.host, host.port)

`load_inventory` reads the whole file (any mistake is one BadInput line); `select_hosts` evaluates a
`--limit` pattern and resolves each selected host's connection, refusing in one line a host vmlab cannot
reach as written.
"""

from __future__ import annotations

from vmlab.inventory.connection import InventoryHost, resolve
from vmlab.inventory.limit import select
from vmlab.inventory.load import load_inventory
from vmlab.inventory.model import Group, Inventory

__all__ = ["Group", "Inventory", "InventoryHost", "load_inventory", "resolve", "select", "select_hosts"]


def select_hosts(inv: Inventory, limit: str | None, vault_password: bytes | None = None) -> list[InventoryHost]:
    """The hosts `limit` selects (all when None), in inventory order, with their connections resolved."""
    return [resolve(inv, name, vault_password) for name in select(inv, limit)]
