"""The optional capabilities EC2 has beyond the base verbs (vmlab.providers.capabilities): regions, list prices,
an SSH range, per-prefix bucket access for a lab's agent, and sweeping leftovers. Mixed into Ec2Provider;
image sharing and copying live with the other image verbs (imaging.py).

Example::

    provider = Ec2Provider(region="eu-west-1")
    provider.current_region()                                # "eu-west-1" (BadInput when unknown)
    grant = provider.grant_storage("s3://my-bucket/alice")   # an instance profile allowing alice/ only
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from vmlab.providers.capabilities import Leftover, StorageGrant
from vmlab.providers.ec2.client import Aws, known_regions, translated

if TYPE_CHECKING:
    from vmlab.providers.ec2.amis import Amis
    from vmlab.providers.ec2.provider import Ec2Provider


class CloudVerbs:
    """Mixed into Ec2Provider, which sets these attributes."""

    aws: Aws
    amis: Amis
    poll: float
    timeout: float

    # ---- Regional ------------------------------------------------------------------------------------------
    def current_region(self) -> str:
        """The region (checked: an unknown region or missing credentials chain is BadInput here)."""
        with translated("open an AWS session"):
            return self.aws.region

    def known_regions(self) -> set[str]:
        with translated("list AWS regions"):
            return known_regions(self.aws.session)

    def in_region(self, region: str, kms_key: str | None = None) -> Ec2Provider:
        """The same provider (waits, timeouts) in `region`, encrypting with `kms_key` there when given."""
        cls: type[Ec2Provider] = type(self)  # type: ignore[assignment]
        return cls(region, poll=self.poll, timeout=self.timeout, image_timeout=self.amis.timeout, kms_key=kms_key)

    # ---- Quotes (offer() is with the launch checks) -----------------------------------------------------------
    def list_price(self, instance_type: str) -> float | None:
        """The bundled on-demand table price of `instance_type` here (None when the table lacks it)."""
        from vmlab.providers.ec2.prices import on_demand

        return on_demand(self.current_region(), instance_type)

    # ---- Firewalled ----------------------------------------------------------------------------------------
    def check_ssh_cidr(self, text: str) -> str:
        from vmlab.providers.ec2.network import normalize_cidr

        return normalize_cidr(text)

    # ---- ScopesStorage -------------------------------------------------------------------------------------
    def storage_scope(self, url: str) -> str | None:
        """s3://bucket/prefix for an s3:// URL (the instance profile allows that prefix only, fixed at launch);
        None for other stores, whose credentials ride in the URL or come from the VM."""
        from vmlab import syncurl

        parsed = syncurl.parse(url)
        return parsed.scope if parsed.store == "s3" else None

    def grant_storage(self, url: str) -> StorageGrant | None:
        """The instance profile that allows the URL's prefix only (found or created), None for other stores."""
        scope = self.storage_scope(url)
        if scope is None:
            return None
        from vmlab.providers.ec2 import profile as iam

        bucket, _, prefix = scope[5:].partition("/")
        name, created = iam.ensure_sync_profile(self.aws, bucket, prefix)
        # the IAM settle wait is left to the caller: a signal in it must find the profile's removal registered
        return StorageGrant(name, created, f"IAM instance profile {name} (access to {url} only)",
                            settle=iam.wait_usable if created else None)

    def revoke_storage(self, grant: StorageGrant) -> None:
        from vmlab.providers.ec2 import profile as iam

        iam.delete_sync_profile(self.aws, grant.name)

    # ---- SweepsLeftovers -----------------------------------------------------------------------------------
    def find_leftovers(self, recorded: Iterable[str] = (), labs: bool = False) -> list[Leftover]:
        from vmlab.providers.ec2.sweep import Sweep

        return Sweep(self).find(recorded, labs=labs)  # type: ignore[arg-type]

    def remove_leftovers(self, items: Iterable[Leftover]) -> tuple[list[Leftover], list[tuple[Leftover, str]]]:
        from vmlab.providers.ec2.sweep import Sweep

        return Sweep(self).remove(items)  # type: ignore[arg-type]
