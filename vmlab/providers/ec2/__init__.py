"""The `ec2` provider: vmlab's VMs and images on Amazon EC2 (boto3, imported lazily).

Example::

    from vmlab.providers import get_provider

    provider = get_provider("ec2", region="us-east-1")     # or AWS_REGION
    print([i.name for i in provider.list_instances({"vmlab:lab": "*"})])
"""

from __future__ import annotations

from vmlab.providers.ec2.provider import Ec2Provider

__all__ = ["Ec2Provider"]
