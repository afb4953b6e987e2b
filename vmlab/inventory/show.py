"""`vmlab inventory --list / --host / --graph`: the JSON and text ansible-inventory prints, so the two diff clean.

    vmlab inventory -i inventory.yaml --list > vmlab.json
    ansible-inventory -i inventory.yaml --list > ansible.json
    diff vmlab.json ansible.json
"""

from __future__ import annotations

import json
from typing import Any

from vmlab.errors import BadInput
from vmlab.inventory.connection import InventoryHost
from vmlab.inventory.model import Inventory
from vmlab.inventory.yamlread import Unsafe, VaultValue


def _plain(value: Any, tagged: bool) -> Any:
    """Values as ansible-inventory writes them: vault text (and, in --list, unsafe text) wrapped in a mapping."""
    if isinstance(value, VaultValue):
        return {"__ansible_vault": str(value)}
    if isinstance(value, Unsafe):
        return {"__ansible_unsafe": str(value)} if tagged else str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v, tagged) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, tagged) for v in value]
    return value


def dumps(data: Any) -> str:
    return json.dumps(data, sort_keys=True, indent=4, ensure_ascii=True)


def as_list(inv: Inventory) -> dict[str, Any]:
    """The `--list` document: each group's own hosts and children, and every host's merged variables."""
    out: dict[str, Any] = {}
    seen: set[str] = set()

    def walk(name: str) -> None:
        group = inv.groups[name]
        body: dict[str, Any] = {}
        if name != "all" and group.hosts:
            body["hosts"] = list(group.hosts)
        if group.children:
            body["children"] = list(group.children)
        if body:
            out[name] = body
        for child in group.children:
            if child not in seen:
                seen.add(child)
                walk(child)

    walk("all")
    hostvars = {h: _plain(inv.vars_of(h), True) for h in inv.hosts_of("all")}
    out["_meta"] = {"hostvars": {h: v for h, v in hostvars.items() if v}, "profile": "inventory_legacy"}
    return out


def host_vars(inv: Inventory, name: str) -> dict[str, Any]:
    """The `--host NAME` document: that host's merged variables."""
    if name not in inv.hosts:
        raise BadInput(f"--host {name}: no host of that name in {inv.path}", "see the names with --list")
    return dict(_plain(inv.vars_of(name), False))


def graph(inv: Inventory, group: str = "all") -> str:
    """The `--graph` tree: groups, their children and hosts, indented as ansible-inventory draws them."""
    if group not in inv.groups:
        raise BadInput(f"--graph {group}: no group of that name in {inv.path}", "give a group name")
    lines: list[str] = []

    def draw(name: str, depth: int) -> None:
        lines.append(_indent(f"@{name}:", depth))
        for child in inv.groups[name].children:
            draw(child, depth + 1)
        if name != "all":
            lines.extend(_indent(h, depth + 1) for h in inv.groups[name].hosts)

    draw(group, 0)
    return "\n".join(lines)


def _indent(text: str, depth: int) -> str:
    return "  |" * depth + "--" + text if depth else text


def connection_json(host: InventoryHost) -> dict[str, Any]:
    """How vmlab will reach a selected host (`vmlab inventory --list-hosts --json`)."""
    return {"name": host.name, "host": host.host, "port": host.port, "user": host.user,
            "key_file": host.key_file, "proxy_jump": host.proxy_jump, "proxy_command": host.proxy_command,
            "host_key_pinned": host.host_key is not None, "connection": host.connection,
            "groups": list(host.groups)}
