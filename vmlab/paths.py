"""Where vmlab keeps things on the user's machine.

State (lab records, keys, known_hosts) lives in the user's state dir, cache (base images, built images) in the
cache dir. `VMLAB_STATE_DIR` and `VMLAB_CACHE_DIR` override them (tests point them at temporary folders).
"""

from __future__ import annotations

import os
from pathlib import Path


def _dir(env: str, kind: str) -> Path:
    override = os.environ.get(env)
    if override:
        path = Path(override)
    else:
        import platformdirs

        path = Path(getattr(platformdirs, f"user_{kind}_dir")("vmlab"))
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def state_dir() -> Path:
    """Private state: lab records, SSH keys, tokens, known_hosts. Created 0700."""
    return _dir("VMLAB_STATE_DIR", "state")


def cache_dir() -> Path:
    """Large rebuildable files: the local provider's base image and images."""
    return _dir("VMLAB_CACHE_DIR", "cache")


def known_hosts_file() -> Path:
    """vmlab's own known_hosts (never the user's ~/.ssh/known_hosts)."""
    return state_dir() / "known_hosts"
