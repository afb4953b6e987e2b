"""vmlab's own wheel, packed in memory from the code this process runs, and the operation that uploads it.

No build backend, no network, no file on this machine: the wheel is a zip of the imported `vmlab` package plus
the installed distribution's metadata (dependencies, extras, console scripts). Entries carry a fixed
timestamp, so the same code always gives the same bytes (a recipe that uploads it keeps its digest, and
bakes are reused until vmlab's code changes)::

    recipe.step("vmlab wheel", ownwheel.OwnWheel("/opt/vmlab-agent/wheels"))
    # then: pip.Packages((f"vmlab[agent] @ file:///opt/vmlab-agent/wheels/{ownwheel.wheel_name()}",), ...)
"""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from vmlab.engine.command import Command
from vmlab.engine.facts import Facts
from vmlab.engine.operation import Operation
from vmlab.errors import BadInput
from vmlab.operations._write import check_mode, check_path
from vmlab.operations.files import plan_content

_EPOCH = (1980, 1, 1, 0, 0, 0)


def _metadata() -> tuple[str, str, str]:
    """(version, METADATA text, entry_points.txt text) of the installed vmlab distribution."""
    from importlib import metadata

    try:
        dist = metadata.distribution("vmlab")
    except metadata.PackageNotFoundError:
        raise BadInput("vmlab is not installed as a distribution, so its wheel cannot be packed",
                       "install it (`pip install -e .` in the checkout), or turn the agent off with -e agent=false"
                       ) from None
    meta = dist.metadata
    lines = ["Metadata-Version: 2.1", f"Name: {meta['Name']}", f"Version: {meta['Version']}"]
    if meta["Requires-Python"]:
        lines.append(f"Requires-Python: {meta['Requires-Python']}")
    lines += [f"Requires-Dist: {r}" for r in meta.get_all("Requires-Dist") or []]
    lines += [f"Provides-Extra: {e}" for e in meta.get_all("Provides-Extra") or []]
    entry_points = dist.read_text("entry_points.txt") or ""
    return meta["Version"], "\n".join(lines) + "\n", entry_points


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def wheel_name() -> str:
    """The wheel's file name, `vmlab-VERSION-py3-none-any.whl` (cheap: reads the installed metadata only)."""
    return f"vmlab-{_metadata()[0]}-py3-none-any.whl"


@lru_cache(maxsize=1)
def wheel_bytes() -> tuple[str, bytes]:
    """(file name, bytes) of a pure-Python wheel of the running vmlab package; packed once per process."""
    import vmlab

    version, metadata_text, entry_points = _metadata()
    package = Path(vmlab.__file__).resolve().parent
    files: list[tuple[str, bytes]] = []
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo"):
            files.append(("vmlab/" + path.relative_to(package).as_posix(), path.read_bytes()))
    info = f"vmlab-{version}.dist-info"
    files += [(f"{info}/METADATA", metadata_text.encode()),
              (f"{info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: vmlab\nRoot-Is-Purelib: true\nTag: py3-none-any\n"),
              (f"{info}/entry_points.txt", entry_points.encode())]
    record = "\n".join(_record_line(n, d) for n, d in files) + f"\n{info}/RECORD,,\n"
    files.append((f"{info}/RECORD", record.encode()))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files:
            entry = zipfile.ZipInfo(name, date_time=_EPOCH)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(entry, data)
    return f"vmlab-{version}-py3-none-any.whl", buffer.getvalue()


@dataclass(frozen=True)
class OwnWheel(Operation):
    """vmlab's own wheel in `folder` on the host (`folder/vmlab-VERSION-py3-none-any.whl`), uploaded only when
    its bytes differ. Example: ``OwnWheel("/opt/vmlab-agent/wheels")``."""

    folder: str
    mode: str = "0644"

    def __post_init__(self) -> None:
        check_path(self, "folder")
        check_mode(self)

    def plan(self, facts: Facts) -> Iterator[Command]:
        name, data = wheel_bytes()
        yield from plan_content(facts, f"{self.folder.rstrip('/')}/{name}", data, self.mode, None, None)

    def fingerprint(self) -> str:
        return f"{self!r} sha256={hashlib.sha256(wheel_bytes()[1]).hexdigest()}"


__all__ = ["OwnWheel", "wheel_bytes", "wheel_name"]
