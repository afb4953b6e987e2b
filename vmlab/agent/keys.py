"""Object keys for file names, including names that are not valid UTF-8.

A Linux file name is bytes; a store key is UTF-8 text. The agent handles names as Python strings decoded with
"surrogateescape" (a byte that is not UTF-8, 0x80-0xFF, becomes U+DC80-U+DCFF). `key_of` turns each such byte
0xXY into the private-use character U+F7XY, and writes a literal U+F700-U+F7FF of a name as U+F700 followed by
it, so the mapping is reversible and every ordinary name (valid UTF-8 without those private-use characters) is
its own key. `rel_of` undoes it: restore writes back the same bytes.

Example::

    key_of("caf\\udce9.txt") == "caf\\uf7e9.txt"     # the bytes b"caf\\xe9.txt", as unzip leaves them
    rel_of("caf\\uf7e9.txt") == "caf\\udce9.txt"
    key_of("notes.ipynb") == "notes.ipynb"
"""

from __future__ import annotations

ESCAPE = "\uf700"
# The object the sync daemon keeps under its prefix to notice a bucket that lost its objects (never restored).
MARKER_KEY = ".~vmlab-agent-marker"


def key_of(rel: str) -> str:
    """The store key of a relative path (see the module docstring)."""
    if rel.isascii():
        return rel
    out = []
    for ch in rel:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(chr(0xF700 + code - 0xDC00))
        elif 0xF700 <= code <= 0xF7FF:
            out.append(ESCAPE + ch)
        else:
            out.append(ch)
    return "".join(out)


def rel_of(key: str) -> str:
    """The relative path a key restores to (the inverse of `key_of`)."""
    if key.isascii():
        return key
    out = []
    literal = False
    for ch in key:
        code = ord(ch)
        if literal:
            out.append(ch)
            literal = False
        elif ch == ESCAPE:
            literal = True
        elif 0xF780 <= code <= 0xF7FF:
            out.append(chr(0xDC00 + code - 0xF700))
        else:
            out.append(ch)
    return "".join(out)


def shown(rel: str) -> str:
    """`rel` printable in a log line or the status file: a byte that is not UTF-8 is shown as \\xNN."""
    return rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
