"""JSON metadata of local VMs and images, kept beside their disks in the cache dir.

A record is written to a temporary file and renamed, so a reader sees the old or the new record, never half.
Parsing is strict: a damaged record is reported with its path instead of producing a half-filled object.

Example::

    rec = VmRecord(id=new_id("lvm"), name="lab", image="debian-12", port=2222, ...)
    write_vm(vm_dir, rec)
    assert read_vm(vm_dir) == rec
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vmlab.errors import VmlabError
from vmlab.fileio import write_atomic
from vmlab.providers.base import Image

DISK = "disk.qcow2"
IMAGE_META = "image.json"
VM_META = "vm.json"


def default_root() -> Path:
    """The local provider's cache root: `cache_dir()/local`."""
    from vmlab.paths import cache_dir

    return cache_dir() / "local"


def now() -> str:
    """The current UTC time, ISO 8601 with seconds."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_id(prefix: str) -> str:
    """A fresh id such as `lvm-3f9c0a1b2d4e` or `limg-...` (48 random bits)."""
    return f"{prefix}-{secrets.token_hex(6)}"


def write_json(path: Path, data: Mapping[str, Any], mode: int = 0o600) -> None:
    """Write JSON atomically (temp file + rename)."""
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n", mode)


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object; VmlabError naming the file when it is missing or damaged."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise VmlabError(f"metadata missing: {path}", "remove the directory and recreate it") from exc
    except (OSError, ValueError) as exc:
        raise VmlabError(f"metadata unreadable: {path}: {exc}", "remove the directory and recreate it") from exc
    if not isinstance(data, dict):
        raise VmlabError(f"metadata is not a JSON object: {path}", "remove the directory and recreate it")
    return data


def _str_map(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                               for k, v in value.items()):
        raise VmlabError(f"{where}: tags must map strings to strings")
    return dict(value)


def image_from_dict(data: Mapping[str, Any], where: str = "image metadata") -> Image:
    """An Image from its JSON form; extra keys (build_seconds, kernel, ...) are ignored."""
    for key in ("id", "name", "state"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise VmlabError(f"{where}: field {key!r} missing or not a string", "delete the image")
    shared = data.get("shared_with", [])
    if not isinstance(shared, list) or not all(isinstance(a, str) for a in shared):
        raise VmlabError(f"{where}: shared_with must be a list of account ids", "delete the image")
    size = data.get("size_bytes")
    if size is not None and not isinstance(size, int):
        raise VmlabError(f"{where}: size_bytes must be an integer", "delete the image")
    return Image(id=data["id"], name=data["name"], state=data["state"], provider="local",
                 created=data.get("created"), tags=_str_map(data.get("tags", {}), where), size_bytes=size,
                 shared_with=tuple(shared), source=data.get("source"), user=data.get("user", "admin"),
                 architecture=data.get("architecture", "x86_64"))


def image_to_dict(image: Image) -> dict[str, Any]:
    """The JSON form of an Image."""
    data = asdict(image)
    data["tags"] = dict(image.tags)
    data["shared_with"] = list(image.shared_with)
    return data


def write_image(directory: Path, image: Image, **extra: Any) -> None:
    """Write `image.json` (last step of building an image: its presence marks the image complete)."""
    write_json(directory / IMAGE_META, {**extra, **image_to_dict(image)}, mode=0o644)


def read_image(directory: Path) -> Image:
    """The Image recorded in `directory`."""
    path = directory / IMAGE_META
    return image_from_dict(read_json(path), str(path))


@dataclass(frozen=True)
class VmRecord:
    """What the provider remembers about a VM; the live state comes from the QEMU pid, not from here."""

    id: str
    name: str
    image: str
    port: int
    created: str
    backing: str
    kernel: str
    initrd: str
    accel: str = "tcg"
    memory_mb: int = 2048
    cpus: int = 2
    tags: dict[str, str] = field(default_factory=dict)
    state: str = "pending"
    instance_id: str = ""


def vm_from_dict(data: Mapping[str, Any], where: str = "VM metadata") -> VmRecord:
    """A VmRecord from JSON, checking every field's type."""
    kwargs: dict[str, Any] = {}
    for f in fields(VmRecord):
        if f.name not in data:
            continue
        value = data[f.name]
        expected = {"port": int, "memory_mb": int, "cpus": int, "tags": dict}.get(f.name, str)
        if not isinstance(value, expected) or isinstance(value, bool):
            raise VmlabError(f"{where}: field {f.name!r} must be {expected.__name__}", "terminate the VM")
        kwargs[f.name] = _str_map(value, where) if f.name == "tags" else value
    missing = [f.name for f in fields(VmRecord) if f.name not in kwargs and f.name in _REQUIRED]
    if missing:
        raise VmlabError(f"{where}: missing {', '.join(missing)}", "terminate the VM")
    return VmRecord(**kwargs)


_REQUIRED = ("id", "name", "image", "port", "created", "backing", "kernel", "initrd")


def write_vm(directory: Path, rec: VmRecord) -> None:
    """Write `vm.json` for a VM."""
    write_json(directory / VM_META, asdict(rec))


def read_vm(directory: Path) -> VmRecord:
    """The VmRecord stored in a VM directory."""
    path = directory / VM_META
    return vm_from_dict(read_json(path), str(path))

