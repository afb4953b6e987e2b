"""Checks for recipe variables, for a recipe's `@recipe.check`: a value from `-e`, an inventory or a tag is data.

Recipes write variables into unit files, config files, paths that get chowned and the odd shell line. A value
holding a newline, `..`, a quote or a `%` would become a directive, a path out of its folder or code, so each
check accepts only the plain shapes a value of that kind has, and refuses anything else with one line that says
what to write instead (BadInput: exit 2, nothing touched)::

    @recipe.check
    def _variables(v):
        varcheck.user_name(v, "user")
        varcheck.folder_name(v, "data_dir")       # one folder under a home: no '/', no '..'
        varcheck.abs_path(v, "venv")              # /opt/lab, never /opt/../etc or "/opt/my lab"
        varcheck.port(v, "port")
        varcheck.seconds(v, "cull_idle")
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from vmlab.errors import BadInput

#: a login name as useradd and every unit file take it (no dots, no upper case, no leading '-')
USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
#: one path component: never '.', '..' or hidden, no whitespace, quotes, '%' (a systemd specifier) or '$'
_PART = r"[A-Za-z0-9_][A-Za-z0-9_.+-]*"
FOLDER_NAME = re.compile(_PART)
ABS_PATH = re.compile(rf"(/{_PART})+")
RELATIVE_PATH = re.compile(rf"{_PART}(/{_PART})*")
#: a URL on one line with nothing a config line or shell would read as syntax
URL = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]+)?(/[A-Za-z0-9_.~+%@:=,-]*)*")
SHA256 = re.compile(r"[0-9a-fA-F]{64}")
#: a Debian package name
PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]*")
#: a release or package version: 24.11.3-0, 1.1-1, 12.6
VERSION = re.compile(r"[0-9][A-Za-z0-9.+_-]*")


def _bad(name: str, value: Any, what: str, example: str) -> BadInput:
    return BadInput(f"{name} {value!r} is not {what}", f"use e.g. -e {name}={example}")


def _matches(v: Mapping[str, Any], name: str, pattern: re.Pattern[str], what: str, example: str) -> str:
    value = v[name]
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise _bad(name, value, what, example)
    return value


def user_name(v: Mapping[str, Any], name: str = "user") -> str:
    """A login name: lower-case letters, digits, '_' and '-', at most 32 characters."""
    return _matches(v, name, USER_NAME, "a user name (lower-case letters, digits, _ and -)", "ubuntu")


def folder_name(v: Mapping[str, Any], name: str) -> str:
    """One folder name (`data`): no '/', never '.' or '..', no spaces or shell/systemd syntax."""
    return _matches(v, name, FOLDER_NAME, "a folder name (letters, digits, _ . + -; no '/' or '..')", "data")


def relative_path(v: Mapping[str, Any], name: str, example: str = "runs") -> str:
    """Folders below another (`runs/tb`): no leading '/', no '.' or '..' part."""
    return _matches(v, name, RELATIVE_PATH, "a relative path (folder names joined by '/', no '..')", example)


def abs_path(v: Mapping[str, Any], name: str, example: str = "/opt/lab") -> str:
    """An absolute path of plain folder names: no '..', no '//', no trailing '/', no spaces or quotes."""
    return _matches(v, name, ABS_PATH, "an absolute path of plain folder names (no '..', spaces or quotes)",
                    example)


def url(v: Mapping[str, Any], name: str, example: str = "https://mirror.example.org/path") -> str:
    """An http(s) URL without spaces, quotes or other characters that would end a config line."""
    return _matches(v, name, URL, "an http(s) URL without spaces or quotes", example)


def sha256(v: Mapping[str, Any], name: str) -> str:
    return _matches(v, name, SHA256, "a sha256 (64 hex digits)", "$(sha256sum FILE | cut -c1-64)")


def version(v: Mapping[str, Any], name: str, example: str = "1.2.3") -> str:
    return _matches(v, name, VERSION, "a version (digits, letters, . + _ -)", example)


def package(v: Mapping[str, Any], name: str, example: str) -> str:
    return _matches(v, name, PACKAGE, "a Debian package name", example)


def line(v: Mapping[str, Any], name: str, example: str) -> str:
    """Text for one line of a config file: no line breaks or other control characters."""
    value = v[name]
    if not isinstance(value, str) or any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise _bad(name, value, "one line of text", example)
    return value


def boolean(v: Mapping[str, Any], name: str) -> bool:
    if not isinstance(v[name], bool):
        raise BadInput(f"{name} {v[name]!r} is not true or false", f"use -e {name}=true or -e {name}=false")
    return bool(v[name])


def installer(v: Mapping[str, Any], name: str) -> str:
    """`uv` or `pip`: what the pip operations install with."""
    if v[name] not in ("uv", "pip"):
        raise BadInput(f"{name} {v[name]!r} is not uv or pip", f"use -e {name}=uv or -e {name}=pip")
    return str(v[name])


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def port(v: Mapping[str, Any], name: str, example: int = 8888) -> int:
    """A user port, 1024-65535 (the labs never need root's ports)."""
    if not _integer(v[name]) or not 1024 <= v[name] < 65536:
        raise BadInput(f"{name} {v[name]!r} is not a port number from 1024 to 65535", f"use e.g. -e {name}={example}")
    return int(v[name])


def seconds(v: Mapping[str, Any], name: str, example: int = 3600) -> int:
    """A whole number of seconds, 0 or more."""
    if not _integer(v[name]) or v[name] < 0:
        raise BadInput(f"{name} {v[name]!r} is not a number of seconds", f"use e.g. -e {name}={example} (0: never)")
    return int(v[name])


def requirement(v: Mapping[str, Any], name: str, example: str = "'jupyterlab>=4,<5'") -> str:
    """A PEP 508 requirement (`jupyterlab>=4,<5`), never a pip option or a second line."""
    from packaging.requirements import InvalidRequirement, Requirement

    value = v[name]
    try:
        if not isinstance(value, str) or value.startswith("-") or "\n" in value:
            raise InvalidRequirement(value)
        Requirement(value)
    except InvalidRequirement:
        raise _bad(name, value, "a pip requirement", example) from None
    return value


__all__ = ["abs_path", "boolean", "folder_name", "installer", "line", "package", "port", "relative_path",
           "requirement", "seconds", "sha256", "url", "user_name", "version"]
