"""Host keys of an inventory: an optional `:port` and `[a:b(:step)]` ranges, read as Ansible reads them.

    >>> expand_host_key("www[01:05:2].example.org")
    (['www01.example.org', 'www03.example.org', 'www05.example.org'], None)
    >>> expand_host_key("badwolf.example.com:5309")
    (['badwolf.example.com'], 5309)
    >>> expand_host_key("rack[1:2]-node[a:b]")[0]
    ['rack1-nodea', 'rack1-nodeb', 'rack2-nodea', 'rack2-nodeb']

A key that is not a host name, IP address or `[address]:port` is a literal name (no port), as in Ansible;
a key with a `[` that is not a well-formed range is refused rather than guessed at.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
import string

MAX_HOSTS = 10_000  # one key never expands to more hosts than this: a typo must not eat the machine's memory

_BRACKETED_PORT = re.compile(r"\[(.+)\]:([0-9]+)")
_HOST_PORT = re.compile(r"((?:[^:\[\]]|\[[^\]]*\])*):([0-9]+)")
_RANGE = r"\[(?:[a-zA-Z]:[a-zA-Z]|[0-9]+:[0-9]+)(?::[0-9]+)?\]"
_LABEL = re.compile(rf"(?:\w|{_RANGE})(?:[\w-]|{_RANGE})*")
_ONE_RANGE = re.compile(r"\[([^\]]*)\]")


class RangeError(ValueError):
    """A range Ansible refuses too (unequal widths, end before start, a step of 0 ...); the message says which."""


def _is_label(label: str) -> bool:
    return bool(_LABEL.fullmatch(label)) and not label.endswith(("-", "_"))


def _is_hostname(text: str) -> bool:
    return all(_is_label(label) for label in text.split("."))


def _is_ipv6(text: str) -> bool:
    if "%" in text or "[" in text:
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    if "." in text:  # only the IPv4-mapped/compatible spellings Ansible accepts
        head = text.rsplit(":", 1)[0].lower()
        return head in ("", ":", "::ffff", "0:0:0:0:0", "0:0:0:0:0:0:ffff") or head == "0:0:0:0:0:ffff"
    return True


def split_port(key: str) -> tuple[str, int | None, bool]:
    """(address, port, recognised): `[addr]:port` and `name:port`; an unrecognised key is returned whole."""
    address, port = key, None
    m = _BRACKETED_PORT.fullmatch(address)
    if m:
        address, port = m.group(1), int(m.group(2))
    m = _HOST_PORT.fullmatch(address)  # Ansible tries this one after the bracketed form too
    if m:
        address, port = m.group(1), int(m.group(2))
    if address and (_is_hostname(address) or _is_ipv6(address)):
        return address, port, True
    return key, None, False


def _sequence(spec: str) -> list[str]:
    """The values of one range body `a:b` or `a:b:step`, formatted as Ansible formats them."""
    bounds = spec.split(":")
    if len(bounds) not in (2, 3):
        raise RangeError("a range is [begin:end] or [begin:end:step]")
    begin, end = bounds[0] or "0", bounds[1]
    step_text = bounds[2] if len(bounds) == 3 else "1"
    if not end:
        raise RangeError("a range needs an end value")
    if not step_text.isdigit() or int(step_text) == 0:
        raise RangeError(f"step {step_text!r} must be a whole number above 0")
    step = int(step_text)
    width = len(begin) if begin.startswith("0") and len(begin) > 1 else 0
    if width and len(end) != width:
        raise RangeError("zero-padded begin and end must have the same width (e.g. [01:10])")
    letters = string.ascii_letters
    if len(begin) == 1 and len(end) == 1 and begin in letters and end in letters:
        lo, hi = letters.index(begin), letters.index(end)
        if lo > hi:
            raise RangeError("a letter range must have begin <= end (a-z sort before A-Z)")
        return list(letters[lo:hi + 1:step])
    if not (begin.isdigit() and end.isdigit()):
        raise RangeError("a range is numbers ([1:9], [01:10]) or single letters ([a:f])")
    lo, hi = int(begin), int(end)
    if hi < lo:
        raise RangeError("the range ends before it starts")
    count = (hi - lo) // step + 1
    if count > MAX_HOSTS:
        raise RangeError(f"{count} hosts is more than vmlab expands from one key ({MAX_HOSTS})")
    return [str(i).zfill(width) for i in range(lo, hi + 1, step)]


def expand_range(pattern: str) -> list[str]:
    """Every name a pattern with `[..]` ranges stands for, first range outermost; RangeError if malformed."""
    parts = _ONE_RANGE.split(pattern)  # literal, range, literal, range, ..., literal
    if any("[" in p or "]" in p for p in parts[0::2]):
        raise RangeError("brackets must pair up as [begin:end]")
    sequences = [_sequence(spec) for spec in parts[1::2]]
    total = 1
    for seq in sequences:
        total *= len(seq)
    if total > MAX_HOSTS:
        raise RangeError(f"{total} hosts is more than vmlab expands from one key ({MAX_HOSTS})")
    literals = parts[0::2]
    out = []
    for combo in itertools.product(*sequences):
        out.append("".join(lit + val for lit, val in zip(literals, (*combo, ""), strict=True)))
    return out


def expand_host_key(key: str) -> tuple[list[str], int | None]:
    """(host names, port or None) for one key under `hosts:`; RangeError for what neither tool expands."""
    address, port, recognised = split_port(key)
    if "[" not in address:
        return [address], port
    if not recognised:
        raise RangeError("not a host name, address or range vmlab reads")
    return expand_range(address), port
