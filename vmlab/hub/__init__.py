"""JupyterHub integration: `vmlab.hub.LabSpawner`, a lab per user: a VM (ec2, local) or a container on the hub's
machine (container) (docs/hub.md).

JupyterHub is imported only when the spawner is (`c.JupyterHub.spawner_class = "vmlab.hub.LabSpawner"`), so
vmlab itself never needs it.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "LabSpawner":
        from vmlab.hub.spawner import LabSpawner

        return LabSpawner
    raise AttributeError(name)
