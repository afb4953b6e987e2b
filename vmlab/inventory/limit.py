"""`--limit` patterns, evaluated as Ansible evaluates them.

    web,db           hosts of web or db (`web:db` too)
    web:&prod        in web and in prod          web:!db        in web, not in db
    web*  *.example.com                          shell globs on group and host names
    ~web[0-9]+       a regular expression (matched from the start)
    web[0]  web[1:3]  web[-1]                    by position in the group (end included)
    @retry-file      one pattern per line of a file (what `ansible-playbook` writes on failure)

Plain patterns are applied first, then `&` ones, then `!` ones; the result keeps inventory order. Where
Ansible would only warn (a pattern that matches nothing) or invent a host (an implicit `localhost`), vmlab
refuses in one line.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from pathlib import Path

from vmlab.errors import BadInput
from vmlab.inventory.model import Inventory
from vmlab.inventory.ranges import split_port

_SUBSCRIPT = re.compile(r"(.+)\[(?:(-?[0-9]+)|([0-9]+)[:-]([0-9]*))\]")
_WORD = re.compile(r"(?:[^\s:\[\]]|\[[^\]]*\])+")
_GLOB_CHARS = (".", "?", "*", "[")
FIX = "patterns: name, a,b  a:&b  a:!b  web*  ~regex  group[0]  group[1:3]  @file"


def split_patterns(text: str) -> list[str]:
    """`a,b` or (without commas) `a:b:!c`; a single host[:port] or range stays one pattern."""
    if "," in text:
        parts = text.split(",")
    elif split_port(text)[2]:
        parts = [text]
    else:
        parts = _WORD.findall(text)
    return [p.strip() for p in parts if p.strip()]


def _read_patterns(text: str) -> list[str]:
    out: list[str] = []
    for part in split_patterns(text):
        if not part.startswith("@"):
            out.append(part)
            continue
        path = Path(part[1:])
        try:
            out.extend(line.strip() for line in path.read_text().split("\n"))
        except OSError as exc:
            raise BadInput(f"--limit {part}: cannot read {path} ({exc.strerror})", "give an existing file") from None
    return out


def select(inv: Inventory, limit: str | None) -> list[str]:
    """The hosts `limit` selects, in inventory order (all hosts when it is empty)."""
    everyone = inv.hosts_of("all")
    if not limit or not limit.strip():
        return everyone
    wanted = set(evaluate(inv, _read_patterns(limit)))
    return [h for h in everyone if h in wanted]


def evaluate(inv: Inventory, patterns: list[str]) -> list[str]:
    """Hosts matching a list of patterns: plain ones first, then `&` (intersect), then `!` (remove)."""
    patterns = [p for p in patterns if p]
    plain = [p for p in patterns if p[0] not in "&!"] or ["all"]
    ordered = plain + [p for p in patterns if p[0] == "&"] + [p for p in patterns if p[0] == "!"]
    hosts: list[str] = []
    for p in ordered:
        if p in inv.hosts:
            hosts.append(p)
            continue
        that = _match_one(inv, p)
        if p[0] == "!":
            hosts = [h for h in hosts if h not in set(that)]
        elif p[0] == "&":
            hosts = [h for h in hosts if h in set(that)]
        else:
            existing = set(hosts)
            hosts.extend(h for h in that if h not in existing)
    return list(dict.fromkeys(hosts))


def _match_one(inv: Inventory, pattern: str) -> list[str]:
    expr = pattern[1:] if pattern[0] in "&!" else pattern
    if not expr:
        raise BadInput(f"--limit {pattern}: empty pattern", FIX)
    start: int | None = None
    end: int | None = None
    m = _SUBSCRIPT.fullmatch(expr) if expr[0] != "~" else None
    if m:
        expr = m.group(1)
        if m.group(2) is not None:
            start = int(m.group(2))
        else:
            start, end = int(m.group(3)), int(m.group(4)) if m.group(4) else -1
    hosts, group_matched = _enumerate(inv, expr, pattern)
    if not hosts and not group_matched:
        if expr in ("localhost", "127.0.0.1", "::1"):
            raise BadInput(f"--limit {pattern}: {expr} is not in the inventory (Ansible would add an implicit "
                           "local host; vmlab does not)", "add it with ansible_connection: local")
        raise BadInput(f"--limit {pattern}: no host or group matches it in {inv.path}",
                       "use one of: " + ", ".join([*list(inv.groups)[:8], *list(inv.hosts)[:8]]))
    if start is None or not hosts:
        return hosts
    try:
        if end:
            return hosts[start:(len(hosts) - 1 if end == -1 else end) + 1]
        return [hosts[start]]
    except IndexError:
        raise BadInput(f"--limit {pattern}: the group has {len(hosts)} hosts, no host {start}",
                       "count from 0, e.g. web[0] or web[0:2]") from None


def _enumerate(inv: Inventory, expr: str, pattern: str) -> tuple[list[str], bool]:
    matches = _matcher(expr, pattern)
    groups = [g for g in inv.groups if matches(g)]
    out = [h for g in groups for h in inv.hosts_of(g)]
    if not groups or expr[0] == "~" or any(c in expr for c in _GLOB_CHARS):
        out.extend(h for h in inv.hosts if matches(h))
    return out, bool(groups)


def _matcher(expr: str, pattern: str) -> Callable[[str], object]:
    try:
        rx = re.compile(expr[1:] if expr[0] == "~" else fnmatch.translate(expr))
    except re.error as exc:
        raise BadInput(f"--limit {pattern}: not a valid regular expression ({exc})", FIX) from None
    return rx.match
