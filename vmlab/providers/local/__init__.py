"""The `local` provider: QEMU VMs on this machine (KVM when a probe proves it works, TCG otherwise).

Example::

    from vmlab.providers.local import LocalProvider, ensure_base_image

    ensure_base_image(lambda msg, frac: print(msg))      # once; minutes (debootstrap)
    provider = LocalProvider()
"""

from __future__ import annotations

from vmlab.providers.local.baseimage import BASE_ID, ensure_base_image
from vmlab.providers.local.provider import LocalProvider

__all__ = ["BASE_ID", "LocalProvider", "ensure_base_image"]
