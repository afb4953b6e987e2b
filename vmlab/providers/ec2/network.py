"""Who may reach a VM's sshd: the caller's public address as a /32 (or a range the user names), and the default VPC.

The address comes from, in order: the launch's `ssh_cidr`, `VMLAB_SSH_CIDR`, then https://checkip.amazonaws.com.
A range open to the whole internet (`0.0.0.0/0`, `::/0`) is only ever used when the user wrote it themselves
(reviewed: never a default; the caller's /32 is).

Example::

    cidr = ssh_cidr(spec.ssh_cidr, os.environ)           # "203.0.113.7/32"
    ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[ssh_permission(cidr)])
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Mapping
from typing import Any

from vmlab.errors import BadInput, HostError

log = logging.getLogger("vmlab.providers.ec2")

CHECKIP_URL = "https://checkip.amazonaws.com"
CIDR_ENV = "VMLAB_SSH_CIDR"
SSH_PORT = 22


def normalize_cidr(text: str) -> str:
    """A CIDR in canonical form; a bare address becomes a single-host range (/32 or /128)."""
    try:
        net = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise BadInput(f"{text!r} is not an IP address or CIDR range", "use e.g. 203.0.113.7/32") from None
    return str(net)


def open_to_world(cidr: str) -> bool:
    return ipaddress.ip_network(cidr).prefixlen == 0


def public_ip(url: str = CHECKIP_URL, timeout: float = 5.0) -> str:
    """This machine's public IPv4 address as AWS sees it."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            text = response.read(64).decode("ascii", "replace").strip()
        return str(ipaddress.IPv4Address(text))
    except (OSError, ValueError) as exc:
        raise HostError(f"could not learn this machine's public IP from {url} ({exc})",
                        f"pass --ssh-cidr YOUR.PUBLIC.IP/32 or set {CIDR_ENV}=YOUR.PUBLIC.IP/32") from None


def ssh_cidr(explicit: str | None, environ: Mapping[str, str],
             lookup: Callable[[], str] = public_ip) -> str:
    """The range allowed to reach port 22: what the user named, else the caller's public address /32."""
    given = explicit or environ.get(CIDR_ENV)
    if given:
        cidr = normalize_cidr(given)
        if open_to_world(cidr):
            log.warning("SSH will be open to the whole internet (%s), as requested", cidr)
        return cidr
    return normalize_cidr(lookup())


def ssh_permission(cidr: str) -> dict[str, Any]:
    """The one ingress rule vmlab ever adds: TCP 22 from `cidr`."""
    net = ipaddress.ip_network(cidr)
    rule: dict[str, Any] = {"IpProtocol": "tcp", "FromPort": SSH_PORT, "ToPort": SSH_PORT}
    if net.version == 4:
        rule["IpRanges"] = [{"CidrIp": cidr, "Description": "vmlab: SSH from the caller"}]
    else:
        rule["Ipv6Ranges"] = [{"CidrIpv6": cidr, "Description": "vmlab: SSH from the caller"}]
    return rule


def default_vpc(ec2: Any, region: str) -> str:
    """The id of the region's default VPC (its subnets give instances a public address)."""
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}]).get("Vpcs", [])
    if not vpcs:
        raise BadInput(f"region {region} has no default VPC",
                       "create one with `aws ec2 create-default-vpc`, or use another region")
    return str(vpcs[0]["VpcId"])
