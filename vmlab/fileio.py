"""Writing vmlab's own files safely: whole or not at all, private from the first byte.

Example::

    write_atomic(state_dir / "labs" / "lab.json", json.dumps(record))      # mode 0600
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, text: str, mode: int = 0o600) -> None:
    """Write `text` to `path` through a temp file in the same folder (created 0600, set to `mode`, synced, then
    renamed over `path`), so a reader or a crash never sees half a file; the temp file is removed on failure."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fchmod(out.fileno(), mode)
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
