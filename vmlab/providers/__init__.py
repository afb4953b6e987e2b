"""Providers by name: a plain dict, imported only when asked for (boto3 and QEMU code load lazily)."""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

from vmlab.errors import BadInput
from vmlab.providers.base import Provider

if TYPE_CHECKING:
    from vmlab.state import LabRecord

PROVIDERS: dict[str, str] = {
    "local": "vmlab.providers.local.provider:LocalProvider",
    "ec2": "vmlab.providers.ec2.provider:Ec2Provider",
}


def default_provider_name() -> str:
    """`VMLAB_PROVIDER` when set, else local (the one that needs no cloud account)."""
    return os.environ.get("VMLAB_PROVIDER", "local")


def get_provider(name: str | None = None, **options: Any) -> Provider:
    name = name or default_provider_name()
    target = PROVIDERS.get(name)
    if target is None:
        raise BadInput(f"unknown provider {name!r}", f"use one of: {', '.join(sorted(PROVIDERS))}")
    module, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    provider: Provider = cls(**options)
    return provider


def provider_for(record: LabRecord) -> Provider:
    """The provider lab `record` was launched with, in the region it was launched in (whatever the default
    region is now): every command that acts on a recorded lab opens its provider here.

    Example: `provider_for(LabStore().get("lab")).describe(record.instance_id)`
    """
    return get_provider(record.provider, **({"region": record.region} if record.region else {}))
