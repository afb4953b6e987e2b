"""End-to-end tests boot real QEMU VMs. They share one cache dir across runs (the Debian base image is built
once, ~3-5 minutes) but keep their own state dir per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_CACHE = Path(os.environ.get("VMLAB_TEST_CACHE", "/var/tmp/vmlab-test-cache"))


@pytest.fixture()
def shared_cache(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point VMLAB_CACHE_DIR at the cache shared by all e2e tests (overrides the per-test private one)."""
    if os.geteuid() != 0:
        pytest.skip("building the local base image needs root (debootstrap)")
    SHARED_CACHE.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("VMLAB_CACHE_DIR", str(SHARED_CACHE))
    return SHARED_CACHE
