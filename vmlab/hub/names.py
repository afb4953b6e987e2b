"""A JupyterHub user's lab: its name, tags and sync prefix, from the class name and the hub's user name.

JupyterHub user names may hold almost anything (spaces, `/`, `@`, unicode, quotes). A name goes into a tag, a file
name, an SSH alias and a bucket path, so only plain names are let through; anything else is refused with one line
that says which names work, never escaped or mangled (two users must never map to one lab).

Example::

    names = LabNames.of("intro-ml", "ana")
    names.lab          # "intro-ml-ana"
    names.sync_url("s3://bucket/intro-ml")   # "s3://bucket/intro-ml/ana/"
    names.tags         # {"vmlab:class": "intro-ml", "vmlab:hub-user": "ana"}
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vmlab import syncurl
from vmlab.errors import BadInput

#: what a user name may be: lowercase letters, digits and single dashes inside, as a lab name
USER_RE = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){0,31}$")
#: the tag every lab of a class carries (`vmlab ls --class NAME`)
CLASS_TAG = "vmlab:class"
#: the hub user a lab belongs to
USER_TAG = "vmlab:hub-user"


def check_class(name: object, where: str = "c.LabSpawner.class_name") -> str:
    """A class name is a lab name prefix: 1-20 lowercase letters, digits and dashes."""
    if not isinstance(name, str) or not USER_RE.fullmatch(name) or len(name) > 20:
        raise BadInput(f"class name {name!r} is not valid",
                       f"set {where} to 1-20 lowercase letters, digits and dashes, e.g. 'intro-ml'")
    return name


def check_user(name: object) -> str:
    if not isinstance(name, str) or not USER_RE.fullmatch(name):
        raise BadInput(f"user name {name!r} cannot name a lab",
                       "use hub user names of 1-32 lowercase letters, digits and dashes (e.g. 'ana-b')")
    return name


def check_sync_root(url: str) -> str:
    """The class's bucket prefix (`s3://bucket/class`), without its trailing slash; BadInput when it is not one."""
    root = url.rstrip("/")
    syncurl.parse(root + "/")
    return root


@dataclass(frozen=True)
class LabNames:
    class_name: str
    user: str

    @classmethod
    def of(cls, class_name: str, user: str) -> LabNames:
        names = cls(check_class(class_name), check_user(user))
        if len(names.lab) > 40:  # 20 + 1 + 32 may pass a lab name's 40: say so rather than cut it
            raise BadInput(f"user {user!r}'s lab name {names.lab!r} is longer than 40 characters",
                           "use a shorter class name (c.LabSpawner.class_name) or user name")
        return names

    @property
    def lab(self) -> str:
        return f"{self.class_name}-{self.user}"

    @property
    def tags(self) -> dict[str, str]:
        return {CLASS_TAG: self.class_name, USER_TAG: self.user}

    def sync_url(self, root: str | None) -> str | None:
        """The user's own prefix under the class's (None: no sync)."""
        return f"{check_sync_root(root)}/{self.user}/" if root else None
