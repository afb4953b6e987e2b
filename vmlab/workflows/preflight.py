"""Checks before the first create, and the plan `--dry-run` prints: the check phase of `up` and `bake` run on
their own, then what would be made is described and nothing is.

A provider that can check a launch completely (`PlansLaunches`, e.g. ec2: image, type offered in a zone, root
size, SSH range, KMS key, VPC) is asked before anything is made; others check inside their `launch`.

Example::

    plan = plan_up(provider, "lab", instance_type="g4dn.xlarge", options=LaunchOptions(spot=True))
    print("\\n".join(plan.lines()))       # nothing was created
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vmlab.providers.base import LaunchPlan, LaunchSpec, PlansLaunches, Provider
from vmlab.providers.capabilities import Regional, ScopesStorage
from vmlab.syncurl import redact

if TYPE_CHECKING:
    from vmlab.workflows.bake import BakeChecks


def check_launch(provider: Provider, spec: LaunchSpec) -> None:
    """Every check the provider can make of `spec` without creating anything (BadInput on the first problem)."""
    if isinstance(provider, PlansLaunches):
        provider.check_launch(spec)


def check_image_name(provider: Provider, name: str) -> None:
    """BadInput when the provider would refuse `name` for a new image (checked before a builder is paid for)."""
    if isinstance(provider, PlansLaunches):
        provider.check_image_name(name)


def where(provider: Provider) -> str:
    """The region of a provider that has one, as " us-east-1"; else the empty string."""
    return f" {provider.current_region()}" if isinstance(provider, Regional) else ""


def where_flags(provider: Provider) -> str:
    """The flags that name this provider (and region) on a command line, e.g. " --provider ec2 --region eu-west-1"."""
    region = provider.current_region() if isinstance(provider, Regional) else None
    return f" --provider {provider.name}" + (f" --region {region}" if region else "")


def plan_launch(provider: Provider, spec: LaunchSpec) -> LaunchPlan:
    if isinstance(provider, PlansLaunches):
        return provider.plan_launch(spec)
    return LaunchPlan(provider=provider.name, image=spec.image, image_name=spec.image,
                      instance_type=spec.instance_type or "default", volume_gb=spec.volume_size_gb, spot=spec.spot,
                      creates=(f"{provider.name} VM from {spec.image}",))


@dataclass
class Plan:
    """What a command would do: `action` is launch, resume or reuse; `launch` the checked launch, if any."""

    command: str
    action: str
    target: str
    launch: LaunchPlan | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [f"dry run: `vmlab {self.command}` would {self.action} {self.target}; nothing was created"]
        for key, value in self.details.items():
            out.append(f"  {key}: {value}")
        plan = self.launch
        if plan is None:
            return out
        where = f" in {plan.region}" + (f" ({plan.zone})" if plan.zone else "") if plan.region else ""
        gives = ", ".join(x for x in (f"{plan.vcpus} vCPU" if plan.vcpus else "",
                                      f"{plan.memory_mib / 1024:g} GiB" if plan.memory_mib else "",
                                      plan.gpus or "no GPU") if x)
        out.append(f"  instance: {plan.instance_type}{where}: {gives}; {'spot' if plan.spot else 'on-demand'}")
        out.append(f"  price: {_price(plan)}")
        out.append("  would create:")
        out.extend(f"    - {thing}" for thing in plan.creates)
        out.extend(f"  limit: {limit}" for limit in plan.limits)
        return out

    def to_json(self) -> dict[str, Any]:
        return {"dry_run": True, "command": self.command, "action": self.action, "target": self.target,
                "details": self.details, "launch": self.launch.to_json() if self.launch else None}


def _price(plan: LaunchPlan) -> str:
    on_demand = f"on-demand ~${plan.on_demand_hourly:.4g}/h" if plan.on_demand_hourly is not None else \
        "on-demand price unknown"
    if not plan.spot:
        return on_demand + " (estimate)"
    spot = f"spot up to ~${plan.spot_hourly:.4g}/h now" if plan.spot_hourly is not None else "no recent spot price"
    return f"{spot}, {on_demand} (estimates)"


def plan_up(provider: Provider, name: str, **flags: Any) -> Plan:
    """`vmlab up NAME --dry-run`: every check of `up`, then the plan."""
    from vmlab.workflows.labs import check_up

    checks = check_up(provider, name, **flags)
    settings = checks.settings.describe()
    if checks.existing is not None:
        verb = "start and resume" if checks.existing.state in ("stopped", "stopping") else "resume"
        return Plan("up", verb, f"lab {name} ({checks.existing.id})",
                    details={"lab": settings, "token": "a fresh Jupyter token"})
    assert checks.spec is not None and checks.image is not None
    details = {"image": f"{checks.image.name} ({checks.image.id})", "lab": settings,
               "on this machine": f"lab record and SSH key of {name}"}
    url = checks.settings.sync_url
    if url and isinstance(provider, ScopesStorage) and provider.storage_scope(url) is not None:
        details["bucket access"] = f"an IAM role and instance profile allowing {redact(url)} only (made if missing)"
    return Plan("up", "launch", f"lab {name}", plan_launch(provider, checks.spec), details)


def plan_bake(provider: Provider, checks: BakeChecks) -> Plan:
    """`vmlab bake --dry-run`: `bake`'s check phase (vmlab.workflows.bake.check_bake), then the plan."""
    if checks.reuse is not None:
        return Plan("bake", "reuse", f"image {checks.reuse.name} ({checks.reuse.id})",
                    details={"recipe": f"{checks.recipe.name} {checks.digest}", "hint": "--force bakes a new image"})
    assert checks.spec is not None
    details = {"recipe": f"{checks.recipe.name} {checks.digest}", "base": checks.base,
               "afterwards": "the builder, its key pair, security group and temporary key are removed"}
    return Plan("bake", "bake", f"image {checks.image_name}", plan_launch(provider, checks.spec), details)
