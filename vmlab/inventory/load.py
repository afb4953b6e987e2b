"""Build an `Inventory` from a YAML inventory file the way Ansible's `yaml` inventory plugin does.

Where Ansible only warns and skips (an unknown key, a group that is not a mapping, a key written twice),
vmlab refuses with one line: a file that means something other than what it says is not guessed at.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vmlab.errors import BadInput
from vmlab.inventory.model import Group, Inventory, ancestors_of
from vmlab.inventory.ranges import RangeError, expand_host_key
from vmlab.inventory.yamlread import FIX, read_yaml

SECTIONS = ("vars", "children", "hosts")


def load_inventory(path: str | Path) -> Inventory:
    """Parse an inventory file; every mistake is one BadInput line naming the file and where in it.

    Example::

        inv = load_inventory("inventory.yaml")
        inv.vars_of("web01")["http_port"]
    """
    doc = read_yaml(path)
    if not isinstance(doc, dict) or not doc:
        raise BadInput(f"{path}: an inventory is a mapping of groups, such as `all`", FIX)
    if "plugin" in doc:
        raise BadInput(f"{path}: this is an inventory plugin configuration, not a YAML inventory",
                       "vmlab reads YAML inventories (all: {hosts, children, vars}) only")
    _check_sidecar_vars(Path(path))
    builder = _Builder(str(path))
    for name, body in doc.items():
        builder.group(name, body, str(name))
    return builder.finish()


def _check_sidecar_vars(path: Path) -> None:
    # Ansible also reads group_vars/ and host_vars/ next to the inventory; ignoring them would change variables
    for folder in ("group_vars", "host_vars"):
        if (path.parent / folder).is_dir():
            raise BadInput(f"{path}: vmlab does not read the {folder}/ folder next to it (Ansible would)",
                           "move those variables into the inventory file, or keep the inventory in another folder")


class _Builder:
    def __init__(self, path: str) -> None:
        self.path = path
        self.hosts: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, Group] = {"all": Group("all"), "ungrouped": Group("ungrouped")}
        self.members: dict[str, set[str]] = {}  # group -> its own hosts, for quick membership checks
        self._link("all", "ungrouped", "all")

    def fail(self, where: str, what: str, fix: str = FIX) -> BadInput:
        return BadInput(f"{self.path}: {where}: {what}", fix)

    def group(self, name: Any, body: Any, where: str) -> str:
        if not isinstance(name, str) or not name:
            raise self.fail(where, f"group name {name!r} must be a non-empty string")
        if body is not None and not isinstance(body, dict):
            raise self.fail(where, "a group must be a mapping of hosts/children/vars (or empty)")
        self.groups.setdefault(name, Group(name))
        body = dict(body or {})
        for section in SECTIONS:
            if isinstance(body.get(section), str):  # `hosts: web1` is short for `hosts: {web1: }`
                body[section] = {body[section]: None}
        for key, value in body.items():
            if key not in SECTIONS:
                raise self.fail(where, f"unknown key {key!r} (a group has hosts, children, vars)")
            if value is None:
                continue
            if not isinstance(value, dict):
                raise self.fail(f"{where}.{key}", f"{key} must be a mapping")
            if key == "vars":
                self._group_vars(name, value, f"{where}.vars")
            elif key == "children":
                for child, child_body in value.items():
                    child_name = self.group(child, child_body, f"{where}.children.{child}")
                    self._link(name, child_name, f"{where}.children.{child}")
            else:
                for host_key, host_vars in value.items():
                    self._hosts(name, host_key, host_vars, f"{where}.hosts.{host_key}")
        return name

    def _group_vars(self, name: str, values: dict[Any, Any], where: str) -> None:
        group = self.groups[name]
        for var, value in values.items():
            _check_var_name(self, var, where)
            if var != "ansible_group_priority":
                group.vars[var] = value
            elif value is not None:
                try:
                    group.priority = int(value)
                except (TypeError, ValueError):
                    raise self.fail(f"{where}.ansible_group_priority", f"{value!r} is not a whole number") from None

    def _hosts(self, group: str, key: Any, values: Any, where: str) -> None:
        if not isinstance(key, str) or not key:
            raise self.fail(where, f"host name {key!r} must be a non-empty string", 'quote it, e.g. "10":')
        if values is not None and not isinstance(values, dict):
            raise self.fail(where, "host variables must be a mapping (or empty)")
        try:
            names, port = expand_host_key(key)
        except RangeError as exc:
            raise self.fail(where, str(exc), "write ranges as name[01:10], name[1:9:2] or name[a:f]") from None
        for name in names:
            if name not in self.hosts:
                self.hosts[name] = {"ansible_port": port} if port else {}
            members = self.members.setdefault(group, set())
            if name not in members:
                members.add(name)
                self.groups[group].hosts.append(name)
            for var, value in (values or {}).items():
                _check_var_name(self, var, where)
                self.hosts[name][var] = value

    def _link(self, parent: str, child: str, where: str) -> None:
        if child == "ungrouped" and parent != "all":  # Ansible then drops the parent's vars from some hosts
            raise self.fail(where, f"`ungrouped` is Ansible's implicit group and cannot be a child of {parent!r}",
                            "list those hosts in a group of your own")
        if child == parent or child in ancestors_of(self.groups, parent):
            raise self.fail(where, f"groups {parent!r} and {child!r} contain each other in a loop")
        p, c = self.groups[parent], self.groups[child]
        if child not in p.children:
            p.children.append(child)
            if parent not in c.parents:
                c.parents.append(parent)

    def finish(self) -> Inventory:
        for name, group in self.groups.items():
            if name != "all" and not group.parents:
                self._link("all", name, name)
        draft = Inventory(self.path, self.hosts, self.groups)
        ungrouped = self.groups["ungrouped"]
        leave, join = set(), []
        for host in self.hosts:
            mine = draft.groups_of(host)
            if "ungrouped" in mine:
                if mine - {"all", "ungrouped"} and host in self.members.get("ungrouped", ()):
                    leave.add(host)
            elif mine <= {"all"}:
                join.append(host)
        ungrouped.hosts = [h for h in ungrouped.hosts if h not in leave] + join
        _set_depths(self.groups)
        return Inventory(self.path, self.hosts, self.groups)


def _check_var_name(builder: _Builder, var: Any, where: str) -> None:
    if not isinstance(var, str) or not var:
        raise builder.fail(where, f"variable name {var!r} must be a non-empty string")


def _set_depths(groups: dict[str, Group]) -> None:
    """A group's depth is its longest path from `all`, as Ansible keeps it while edges are added."""
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str) -> None:  # depth-first topological order (the graph has no loops by now)
        stack = [(name, iter(groups[name].children))]
        state[name] = 1
        while stack:
            node, it = stack[-1]
            child = next(it, None)
            if child is None:
                stack.pop()
                order.append(node)
            elif child not in state:
                state[child] = 1
                stack.append((child, iter(groups[child].children)))

    for name in groups:
        if name not in state:
            visit(name)
    for name in reversed(order):
        for child in groups[name].children:
            groups[child].depth = max(groups[child].depth, groups[name].depth + 1)
