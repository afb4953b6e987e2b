"""Options shared by several commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def provider_option(f: F) -> F:
    return click.option("--provider", "provider_name", metavar="local|ec2", default=None,
                        help="Where VMs run (default: $VMLAB_PROVIDER or local).")(f)
