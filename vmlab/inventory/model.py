"""Groups, hosts and the variables a host ends up with, by Ansible's rules.

A host's variables: every group it belongs to (directly or through children), merged in the order
(depth, `ansible_group_priority`, name), so a deeper group wins over its parents and, at equal depth, the
higher priority and then the later name wins; the host's own variables win over every group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Group:
    """One group: its own hosts and child groups in file order, its variables and priority."""

    name: str
    hosts: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)
    vars: dict[str, Any] = field(default_factory=dict)
    priority: int = 1
    depth: int = 0


def ancestors_of(groups: dict[str, Group], group: str) -> set[str]:
    """Every group above `group` (parents, their parents, ...), a loop walked once."""
    out: set[str] = set()
    todo = list(groups[group].parents)
    while todo:
        g = todo.pop()
        if g not in out:
            out.add(g)
            todo.extend(groups[g].parents)
    return out


@dataclass
class Inventory:
    """A parsed inventory; `hosts` maps each host (first-seen order) to its own variables.

    Groups and memberships are read-only once loaded (answers about them are cached).
    """

    path: str
    hosts: dict[str, dict[str, Any]]
    groups: dict[str, Group]
    _cache: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False, compare=False)

    def _cached(self, kind: str, key: str, compute: Any) -> Any:
        if (kind, key) not in self._cache:
            self._cache[kind, key] = compute()
        return self._cache[kind, key]

    def ancestors(self, group: str) -> set[str]:
        return self._cached("ancestors", group,  # type: ignore[no-any-return]
                            lambda: ancestors_of(self.groups, group))

    def _direct_groups(self) -> dict[str, list[str]]:
        def compute() -> dict[str, list[str]]:
            out: dict[str, list[str]] = {}
            for g in self.groups.values():
                for h in g.hosts:
                    out.setdefault(h, []).append(g.name)
            return out

        return self._cached("direct", "", compute)  # type: ignore[no-any-return]

    def descendants(self, group: str) -> list[str]:
        """The group, its children, then each further generation, in the order they are first reached."""
        ordered = [group, *self.groups[group].children]
        seen = set(ordered)
        frontier = list(self.groups[group].children)
        while frontier:
            nxt: list[str] = []
            for g in frontier:
                for child in self.groups[g].children:
                    if child not in seen:
                        seen.add(child)
                        nxt.append(child)
            ordered.extend(nxt)
            frontier = nxt
        return ordered

    def hosts_of(self, group: str) -> list[str]:
        """Every host of `group` and of its descendants, each once, in Ansible's order."""
        def compute() -> list[str]:
            out: dict[str, None] = {}
            for g in self.descendants(group):
                for h in self.groups[g].hosts:
                    out.setdefault(h, None)
            return list(out)

        return list(self._cached("hosts_of", group, compute))

    def groups_of(self, host: str) -> set[str]:
        """The groups `host` belongs to, directly or through a child group (always including `all`)."""
        direct = self._direct_groups().get(host, [])
        out = set(direct)
        for g in direct:
            out |= self.ancestors(g)
        return out

    def group_names(self, host: str) -> list[str]:
        """Ansible's `group_names`: sorted, without `all`."""
        return sorted(g for g in self.groups_of(host) if g != "all")

    def vars_of(self, host: str) -> dict[str, Any]:
        """The host's variables as Ansible merges them (before any template is rendered)."""
        merged: dict[str, Any] = {}
        for name in sorted(self.groups_of(host), key=self.precedence):
            merged.update(self.groups[name].vars)
        merged.update(self.hosts[host])
        return merged

    def precedence(self, name: str) -> tuple[int, int, str]:
        """The sort key of a group's variables: later (deeper, higher priority, later name) wins."""
        g = self.groups[name]
        return (g.depth, g.priority, g.name)
