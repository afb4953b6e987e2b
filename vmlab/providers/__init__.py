"""Providers by name: a plain dict, imported only when asked for (boto3 and QEMU code load lazily).

Example::

    provider = get_provider("local")
    sharer = require(provider, SharesImages, "share images")   # BadInput: the local provider cannot share images
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from vmlab.errors import BadInput
from vmlab.providers.base import Provider

if TYPE_CHECKING:
    from vmlab.state import LabRecord

PROVIDERS: dict[str, str] = {
    "local": "vmlab.providers.local.provider:LocalProvider",
    "ec2": "vmlab.providers.ec2.provider:Ec2Provider",
    "container": "vmlab.providers.container.provider:ContainerProvider",
}

C = TypeVar("C")


def default_provider_name() -> str:
    """`VMLAB_PROVIDER` when set, else local (the one that needs no cloud account)."""
    return os.environ.get("VMLAB_PROVIDER", "local")


def provider_class(name: str) -> type[Any]:
    """The class registered as `name` (imports its module, creates nothing); BadInput for an unknown name."""
    target = PROVIDERS.get(name)
    if target is None:
        raise BadInput(f"unknown provider {name!r}", f"use one of: {', '.join(sorted(PROVIDERS))}")
    module, _, attr = target.partition(":")
    cls: type[Any] = getattr(importlib.import_module(module), attr)
    return cls


def get_provider(name: str | None = None, **options: Any) -> Provider:
    provider: Provider = provider_class(name or default_provider_name())(**options)
    return provider


def implements(cls: type[Any], capability: type[Any]) -> bool:
    """Whether instances of `cls` have `capability` (a method-only protocol of vmlab.providers.capabilities)."""
    return issubclass(cls, capability)


def names_with(capability: type[Any]) -> list[str]:
    """The registered providers that have `capability`, in registry order."""
    return [name for name in PROVIDERS if implements(provider_class(name), capability)]


def name_for(capability: type[Any], name: str | None) -> str:
    """The provider a command that needs `capability` uses: `name` when given, else $VMLAB_PROVIDER when that one
    has it, else the first registered provider that has it (so `vmlab gc` sweeps EC2 without --provider)."""
    if name:
        return name
    default = default_provider_name()
    if default in PROVIDERS and implements(provider_class(default), capability):
        return default
    return next(iter(names_with(capability)), default)


def cannot(provider: Provider, what: str, capability: Any) -> BadInput:
    """The one-line refusal for a provider that lacks `capability`, e.g. "the local provider cannot share
    images", with the providers that can as the fix."""
    able = names_with(capability)
    fix = f"use --provider {' or '.join(able)}" if able else "no registered provider can do that"
    return BadInput(f"the {provider.name} provider cannot {what}", fix)


def require(provider: Provider, capability: Callable[..., C], what: str) -> C:
    """`provider` as `capability` when it has it; else BadInput "the NAME provider cannot WHAT"."""
    if not isinstance(provider, capability):  # type: ignore[arg-type]  # a protocol class, not a factory
        raise cannot(provider, what, capability)
    return cast(C, provider)


def provider_for(record: LabRecord) -> Provider:
    """The provider lab `record` was launched with, in the region it was launched in (whatever the default
    region is now): every command that acts on a recorded lab opens its provider here.

    Example: `provider_for(LabStore().get("lab")).describe(record.instance_id)`
    """
    return get_provider(record.provider, **({"region": record.region} if record.region else {}))
