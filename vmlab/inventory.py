"""Ansible-style YAML inventories: `all` / `children` / `hosts` / `vars`.

    all:
      vars: {user: admin}
      children:
        gpu:
          vars: {key_file: ~/.ssh/lab}
          hosts:
            gpu[01:02].example.org:
            box: {ansible_host: 10.1.2.3, ansible_port: 2222}

Host vars override group vars; a child group's vars override its parent's; groups at the same depth apply in
name order (as Ansible does). `ansible_host`, `ansible_port`, `ansible_user` and
`ansible_ssh_private_key_file` are accepted as aliases of vmlab's `host`, `port`, `user` and `key_file`;
`connection: local` (or `ansible_connection: local`) runs on this machine without SSH;
`proxy_jump` / `proxy_command` (or `-o ProxyJump=`/`-J` in `ansible_ssh_common_args`) reach a host through a
bastion.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmlab.errors import BadInput
from vmlab.safetext import check_host, check_user

ALIASES = {
    "ansible_host": "host", "ansible_ssh_host": "host",
    "ansible_port": "port", "ansible_ssh_port": "port",
    "ansible_user": "user", "ansible_ssh_user": "user",
    "ansible_ssh_private_key_file": "key_file", "ansible_private_key_file": "key_file",
    "ansible_connection": "connection",
}
GROUP_KEYS = {"hosts", "children", "vars"}
FIX = "see inventory.example.yaml for the shape (all: {hosts, children, vars})"


@dataclass(frozen=True)
class InventoryHost:
    """One host with its connection settings and every variable that applies to it."""

    name: str
    host: str
    port: int = 22
    user: str | None = None
    key_file: str | None = None
    proxy_jump: str | None = None
    proxy_command: str | None = None
    host_key: str | None = None
    connection: str = "ssh"
    groups: tuple[str, ...] = ()
    vars: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Inventory:
    path: str
    hosts: dict[str, InventoryHost]
    groups: dict[str, list[str]]

    def select(self, limit: str | None) -> list[InventoryHost]:
        """Hosts named by `limit` (comma/colon-separated host or group names; None = all), in file order."""
        if not limit:
            return list(self.hosts.values())
        wanted: set[str] = set()
        for part in re.split(r"[,:]", limit):
            part = part.strip()
            if not part:
                continue
            if part in self.groups:
                wanted.update(self.groups[part])
            elif part in self.hosts:
                wanted.add(part)
            else:
                known = ", ".join(sorted(self.groups)[:8] + list(self.hosts)[:8])
                raise BadInput(f"--limit {part}: no host or group of that name in {self.path}",
                               f"use one of: {known}")
        return [h for name, h in self.hosts.items() if name in wanted]


def load_inventory(path: str | Path) -> Inventory:
    """Parse an inventory file; every mistake is a BadInput naming the file and where in it."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise BadInput(f"{path}: cannot read inventory ({exc.strerror})", "give the path of a YAML inventory") \
            from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise BadInput(f"{path}{where}: not valid YAML: {problem}", FIX) from None
    if not isinstance(doc, dict) or not doc:
        raise BadInput(f"{path}: an inventory is a mapping with an `all` group", FIX)
    return _Builder(str(path)).build(doc)


class _Builder:
    def __init__(self, path: str) -> None:
        self.path = path
        self.members: dict[str, list[str]] = {}  # group -> its own hosts
        self.children: dict[str, list[str]] = {}
        self.group_vars: dict[str, dict[str, Any]] = {}
        self.host_vars: dict[str, dict[str, Any]] = {}
        self.depth: dict[str, int] = {}

    def build(self, doc: dict[str, Any]) -> Inventory:
        # top-level groups other than `all` are children of `all`, as in Ansible
        all_body = doc.get("all") or {}
        others = {k: v for k, v in doc.items() if k != "all"}
        if others:
            if not isinstance(all_body, dict) or not isinstance(all_body.get("children") or {}, dict):
                raise self._fail("all", "a group must be a mapping of hosts/children/vars")
            all_body = {**all_body, "children": {**(all_body.get("children") or {}), **others}}
        self._group("all", all_body, 0, "all")
        groups = {g: sorted(self._hosts_of(g), key=list(self.host_vars).index) for g in self.depth}
        hosts = {name: self._host(name) for name in self.host_vars}
        return Inventory(self.path, hosts, groups)

    def _fail(self, where: str, what: str) -> BadInput:
        return BadInput(f"{self.path}: {where}: {what}", FIX)

    def _group(self, name: str, body: Any, depth: int, where: str) -> None:
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise self._fail(where, "a group must be a mapping of hosts/children/vars")
        unknown = set(body) - GROUP_KEYS
        if unknown:
            raise self._fail(where, f"unknown key {sorted(unknown)[0]!r} (a group has hosts, children, vars)")
        self.depth[name] = max(self.depth.get(name, 0), depth)
        gvars = body.get("vars") or {}
        if not isinstance(gvars, dict):
            raise self._fail(f"{where}.vars", "vars must be a mapping")
        self.group_vars.setdefault(name, {}).update(gvars)
        hosts = body.get("hosts") or {}
        if not isinstance(hosts, dict):
            raise self._fail(f"{where}.hosts", "hosts must be a mapping of host names (values: vars or empty)")
        for pattern, hvars in hosts.items():
            if hvars is not None and not isinstance(hvars, dict):
                raise self._fail(f"{where}.hosts.{pattern}", "host vars must be a mapping or empty")
            for host in _expand(str(pattern), self, where):
                self.host_vars.setdefault(host, {}).update(hvars or {})
                self.members.setdefault(name, []).append(host)
        children = body.get("children") or {}
        if not isinstance(children, dict):
            raise self._fail(f"{where}.children", "children must be a mapping of group names")
        for child, child_body in children.items():
            self.children.setdefault(name, []).append(str(child))
            self._group(str(child), child_body, depth + 1, f"{where}.children.{child}")

    def _hosts_of(self, group: str, seen: frozenset[str] = frozenset()) -> set[str]:
        if group in seen:
            raise self._fail(group, "groups contain each other in a loop")
        out = set(self.members.get(group, [])) if group != "all" else set(self.host_vars)
        for child in self.children.get(group, []):
            out |= self._hosts_of(child, seen | {group})
        return out

    def _host(self, name: str) -> InventoryHost:
        groups = sorted((g for g in self.depth if name in self._hosts_of(g)), key=lambda g: (self.depth[g], g))
        merged: dict[str, Any] = {}
        for g in groups:
            merged.update(self.group_vars.get(g, {}))
        merged.update(self.host_vars[name])
        conn = {ALIASES.get(k, k): v for k, v in merged.items() if ALIASES.get(k, k) in _CONN}
        _proxy_from_common_args(merged.get("ansible_ssh_common_args"), conn)
        try:
            port = int(conn.get("port", 22))
        except (TypeError, ValueError):
            raise self._fail(name, f"port {conn.get('port')!r} is not a number") from None
        if not 0 < port < 65536:
            raise self._fail(name, f"port {port} is out of range (1-65535)")
        connection = str(conn.get("connection", "ssh"))
        if connection not in ("ssh", "local"):
            raise self._fail(name, f"connection {connection!r} is not supported (use ssh or local)")
        host, user = str(conn.get("host", name)), _opt(conn.get("user"))
        try:  # data: the host goes into a proxy command's words, the user into unit files (`User={{ user }}`)
            check_host(host, "host")
            if user is not None:
                check_user(user, "user")
        except BadInput as exc:
            raise BadInput(f"{self.path}: {name}: {exc.message}", exc.hint) from None
        return InventoryHost(
            name=name, host=host, port=port,
            user=user, key_file=_opt(conn.get("key_file")),
            proxy_jump=_opt(conn.get("proxy_jump")), proxy_command=_opt(conn.get("proxy_command")),
            host_key=_opt(conn.get("host_key")), connection=connection,
            groups=tuple(g for g in groups if g != "all"), vars=merged)


_CONN = {"host", "port", "user", "key_file", "proxy_jump", "proxy_command", "host_key", "connection"}


def _opt(value: Any) -> str | None:
    return None if value is None else str(value)


def _proxy_from_common_args(args: Any, conn: dict[str, Any]) -> None:
    if not args:
        return
    words = shlex.split(str(args))
    for i, word in enumerate(words):
        nxt = words[i + 1] if i + 1 < len(words) else ""
        opt = nxt if word == "-o" else word[2:] if word.startswith("-o") else ""
        key, _, value = opt.partition("=")
        if key.lower() == "proxyjump":
            conn.setdefault("proxy_jump", value)
        elif key.lower() == "proxycommand":
            conn.setdefault("proxy_command", value)
        elif word == "-J" and nxt:
            conn.setdefault("proxy_jump", nxt)


_RANGE = re.compile(r"\[(\d+):(\d+)\]")


def _expand(pattern: str, builder: _Builder, where: str) -> list[str]:
    """`web[01:03]` -> web01, web02, web03 (one numeric range, zero padding kept)."""
    m = _RANGE.search(pattern)
    if not m:
        return [pattern]
    lo, hi = m.group(1), m.group(2)
    if int(hi) < int(lo):
        raise builder._fail(f"{where}.hosts.{pattern}", "range end is below its start")
    width = len(lo) if lo.startswith("0") else 0
    return [pattern[: m.start()] + str(i).zfill(width) + pattern[m.end():] for i in range(int(lo), int(hi) + 1)]
