"""The launch flags of `vmlab up`, shared with `vmlab run --up`: one set of click options collected into `UpFlags`,
the checks made before anything exists (`prepare`), and the launch itself with what it prints (`launch`).

Example::

    @click.command()
    @click.argument("name")
    @up_flag_options
    def up(name: str, flags: UpFlags) -> None:
        ready = prepare(name, flags, out)        # BadInput here: nothing made
        launch(ready, out)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, TypeVar

import click

from vmlab.cli.options import provider_option, region_option
from vmlab.cli.output import Output

if TYPE_CHECKING:
    from vmlab.cli.quote import TypeQuote
    from vmlab.providers.base import LaunchOptions, Provider
    from vmlab.providers.capabilities import TypeChoice
    from vmlab.workflows.labs import UpResult

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class UpFlags:
    provider_name: str | None = None
    image: str | None = None
    instance_type: str | None = None
    spot: bool = False
    max_price: float | None = None
    volume_size: int | None = None
    ssh_cidr: str | None = None
    idle: str | None = None
    max_hours: float | None = None
    sync: str | None = None
    region: str | None = None

    def given(self) -> list[str]:
        """The flags set on the command line, as written there (e.g. ["--type", "--spot"])."""
        names = {"instance_type": "type", "provider_name": "provider"}
        return [f"--{names.get(f.name, f.name).replace('_', '-')}" for f in fields(self)
                if getattr(self, f.name) not in (None, False)]


def up_flag_options(f: F) -> F:
    """Add the launch flags of `up` to a command; it receives them as one `flags: UpFlags` argument."""
    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["flags"] = UpFlags(**{f.name: kwargs.pop(f.name) for f in fields(UpFlags)})
        return f(*args, **kwargs)

    options = [
        provider_option,
        click.option("--image", default=None, help="Image name or id (default: the newest vmlab image)."),
        click.option("--type", "instance_type", default=None, metavar="TYPE",
                     help="Instance type, e.g. g4dn.xlarge, or a size and GPU resolved to the cheapest type that "
                          "fits, e.g. m+t4, l+a10g, gpu=t4, cpu=8,mem=32 (ec2)."),
        click.option("--spot", is_flag=True, help="Use a spot instance (ec2; falls back to on-demand)."),
        click.option("--max-price", type=float, default=None, metavar="USD",
                     help="Highest spot price per hour (ec2, with --spot; default: the on-demand price)."),
        click.option("--volume-size", type=click.IntRange(1, 16384), default=None, metavar="GB",
                     help="Root disk in GB (default: the image's)."),
        click.option("--ssh-cidr", default=None, metavar="CIDR",
                     help="Who may SSH to the lab (ec2; default: this machine's public IP /32)."),
        click.option("--idle", default=None, metavar="DURATION",
                     help="Power off after this long unused, e.g. 30m, 2h; 0 = never (default 30m, or the lab's "
                          "last)."),
        click.option("--max-hours", type=float, default=None, metavar="HOURS",
                     help="Power off this many hours after this `up`, used or not; 0 = never (default 24)."),
        click.option("--sync", default=None, metavar="URL",
                     help="Keep ~/data synced with s3://bucket/prefix (on EC2 an instance profile allows that "
                          "prefix only); '' = stop syncing."),
        region_option,
    ]
    decorated: Any = wrapper
    for option in reversed(options):
        decorated = option(decorated)
    return decorated  # type: ignore[no-any-return]


@dataclass
class PreparedUp:
    """`up` checked and ready: the provider opened, the type resolved, the launch options and price quote."""

    name: str
    flags: UpFlags
    provider: Provider
    instance_type: str | None
    choice: TypeChoice | None
    options: LaunchOptions
    quote: TypeQuote | None


def prepare(name: str, flags: UpFlags, out: Output) -> PreparedUp:
    """Every check of the flags that needs no lab record (provider, region, type, spot, price, CIDR); nothing is
    made. The rest (`check_up`: name, image, instance) runs first thing in `launch`."""
    from vmlab.cli.options import open_provider
    from vmlab.cli.quote import launch_checks, resolve_type

    provider = open_provider(flags.provider_name, flags.region, spot=flags.spot, max_price=flags.max_price,
                             ssh_cidr=flags.ssh_cidr)
    instance_type, choice = resolve_type(provider, out, flags.instance_type, flags.spot)
    options, quote = launch_checks(provider, out, instance_type, flags.spot, flags.max_price, flags.volume_size,
                                   flags.ssh_cidr)
    return PreparedUp(name, flags, provider, instance_type, choice, options, quote)


def launch(ready: PreparedUp, out: Output) -> UpResult:
    """Launch (or resume) the lab as `vmlab up` does, and say how it went."""
    from vmlab.workflows.labs import up as launch_lab

    flags, name = ready.flags, ready.name
    result = launch_lab(ready.provider, name, image=flags.image, instance_type=ready.instance_type, idle=flags.idle,
                        max_hours=flags.max_hours, sync=flags.sync, say=out.say, options=ready.options,
                        quote=ready.quote)
    t = result.timings
    if result.record.hourly_price is not None:
        market = "spot" if result.record.spot else "on-demand"
        out.say(f"{market}, about ${result.record.hourly_price:.4g}/h (estimate) until `vmlab stop {name}`")
    boot = f"boot to SSH {t['boot_to_ssh']:.0f}s, " if "boot_to_ssh" in t else ""  # none for a container lab
    out.say(f"lab {name} is up ({result.record.instance_id}) in {t['total']:.0f}s ({boot}JupyterLab start "
            f"{t.get('jupyter_start', 0):.0f}s, vmlab {t['overhead']:.1f}s); open it with: {result.tunnel_hint}",
            "bold green")
    return result


def up_document(ready: PreparedUp, result: UpResult) -> dict[str, Any]:
    """The --json document of an `up`."""
    return {**result.to_json(), "offer": ready.quote.offer if ready.quote else None,
            "type_choice": ready.choice.to_json() if ready.choice else None}
