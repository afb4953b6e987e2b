"""vmlab: bake VM images, launch JupyterLab VMs from them, and tunnel to them safely."""

from __future__ import annotations

__version__ = "0.1.0"
