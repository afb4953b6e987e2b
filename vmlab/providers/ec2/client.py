"""boto3 for the ec2 provider: a lazy session per region, and botocore errors turned into one-line VmlabErrors.

boto3 is imported on first use only (it costs ~300 ms of start-up). Credentials come from the standard chain
(`AWS_PROFILE`, environment, config files, SSO, instance roles); the region from the caller, `AWS_REGION` or
`AWS_DEFAULT_REGION`, then the profile. `AWS_ENDPOINT_URL` (moto in tests) is honoured by botocore itself.

Example::

    aws = Aws(region="eu-west-1")
    with translated("describe the instance"):
        aws.ec2.describe_instances(InstanceIds=["i-0123456789abcdef0"])
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from vmlab.errors import BadInput, HostError, VmlabError

REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
CREDENTIALS_HINT = ("run `aws configure` (or `aws sso login`), or set AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY")

# code -> (error class, message, hint); `{what}` is the action, `{message}` AWS's own text
_CLIENT_ERRORS: dict[str, tuple[type[VmlabError], str, str]] = {
    "AuthFailure": (BadInput, "AWS rejected the credentials while trying to {what}", CREDENTIALS_HINT),
    "InvalidClientTokenId": (BadInput, "AWS does not know these credentials", CREDENTIALS_HINT),
    "UnrecognizedClientException": (BadInput, "AWS does not know these credentials", CREDENTIALS_HINT),
    "SignatureDoesNotMatch": (BadInput, "AWS rejected the secret access key", CREDENTIALS_HINT),
    "ExpiredToken": (BadInput, "the AWS session credentials have expired", "refresh them (`aws sso login`)"),
    "ExpiredTokenException": (BadInput, "the AWS session credentials have expired",
                              "refresh them (`aws sso login`)"),
    "RequestExpired": (BadInput, "the AWS request expired", "check this machine's clock and your credentials"),
    "UnauthorizedOperation": (BadInput, "not allowed to {what}: {message}",
                              "grant these credentials the EC2 permissions vmlab needs (see docs/ec2-provider.md)"),
    "AccessDenied": (BadInput, "not allowed to {what}: {message}", "grant these credentials the permission"),
    "AccessDeniedException": (BadInput, "not allowed to {what}: {message}",
                              "grant these credentials the permission"),
    "OptInRequired": (BadInput, "the account is not subscribed to this region or AMI: {message}",
                      "opt in to the region (or accept the AMI's terms in the Marketplace)"),
    "InvalidAMIID.Malformed": (BadInput, "malformed AMI id: {message}", "AMI ids look like ami-0123456789abcdef0"),
    "InvalidAMIID.NotFound": (BadInput, "AMI not found in this region: {message}",
                              "AMIs are regional: check --region, or copy/share the AMI to this account"),
    "InvalidAMIID.Unavailable": (BadInput, "AMI is not available: {message}", "choose another AMI"),
    "InvalidInstanceID.Malformed": (BadInput, "malformed instance id: {message}",
                                    "instance ids look like i-0123456789abcdef0"),
    "InvalidInstanceID.NotFound": (BadInput, "instance not found: {message}", "list instances with `vmlab ls`"),
    "InvalidAMIName.Duplicate": (BadInput, "an image with this name exists already: {message}",
                                 "choose another --name"),
    "InvalidAMIName.Malformed": (BadInput, "malformed image name: {message}",
                                 "use 3-128 letters, digits, spaces and ()[]./-'@_"),
    "InvalidParameterValue": (BadInput, "AWS refused a parameter while trying to {what}: {message}",
                              "check the arguments"),
    "InvalidParameterCombination": (BadInput, "AWS refused a combination of parameters: {message}",
                                    "check the arguments (instance type, spot options, volume size)"),
    "Unsupported": (BadInput, "not supported here: {message}", "try another instance type or availability zone"),
    "VPCIdNotSpecified": (BadInput, "the region has no default VPC", "create one: `aws ec2 create-default-vpc`"),
    "InstanceLimitExceeded": (BadInput, "instance quota reached: {message}",
                              "request a higher quota in Service Quotas, or stop other instances"),
    "VcpuLimitExceeded": (BadInput, "vCPU quota reached: {message}",
                          "request a higher quota in Service Quotas (e.g. 'Running On-Demand G and VT instances')"),
    "MaxSpotInstanceCountExceeded": (BadInput, "spot instance quota reached: {message}",
                                     "request a higher spot quota, or launch on-demand"),
    "InsufficientInstanceCapacity": (HostError, "AWS has no capacity for this instance type now: {message}",
                                     "try again later, or another instance type or region"),
    "RequestLimitExceeded": (HostError, "AWS throttled the requests while trying to {what}", "try again in a minute"),
    "Throttling": (HostError, "AWS throttled the requests while trying to {what}", "try again in a minute"),
}


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError ("" for anything else)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))


def from_client_error(exc: BaseException, what: str) -> VmlabError:
    """A one-line VmlabError for an AWS error response: bad input exits 2, a cloud failure 1."""
    code = error_code(exc)
    message = str(getattr(exc, "response", {}).get("Error", {}).get("Message", "") or exc).splitlines()[0]
    known = _CLIENT_ERRORS.get(code)
    if known is None and code.endswith((".NotFound", ".Malformed")):
        known = (BadInput, "{code}: {message}", "check the id")
    if known is None:
        return HostError(f"AWS failed to {what}: {code or 'error'}: {message}",
                         "try again; if it persists, check the AWS console or service health")
    cls, text, hint = known
    return cls(text.format(what=what, message=message, code=code), hint)


def from_botocore_error(exc: BaseException, what: str) -> VmlabError:
    """A one-line VmlabError for botocore's own errors (raised before or instead of an AWS response)."""
    name = type(exc).__name__
    text = str(exc).splitlines()[0] if str(exc) else name
    if name in ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"):
        return BadInput(f"no usable AWS credentials ({text})", CREDENTIALS_HINT)
    if name in ("TokenRetrievalError", "SSOTokenLoadError", "UnauthorizedSSOTokenError"):
        return BadInput("the AWS SSO session has expired or is missing", "run `aws sso login`")
    if name == "ProfileNotFound":
        return BadInput(text, "check AWS_PROFILE (`aws configure list-profiles` lists them)")
    if name in ("NoRegionError", "UnknownRegionError", "InvalidRegionError"):
        return BadInput(f"no valid AWS region ({text})", "pass --region or set AWS_REGION, e.g. us-east-1")
    if name == "ParamValidationError":
        return BadInput(f"invalid request to {what}: {text}", "check the arguments")
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError"):
        return HostError(f"could not reach AWS to {what}: {text}", "check the network (and AWS_ENDPOINT_URL)")
    return HostError(f"AWS call failed while trying to {what}: {text}", "try again")


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Turn botocore exceptions raised inside the block into VmlabErrors; `what` completes "failed to ..."."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        raise from_client_error(exc, what) from exc
    except BotoCoreError as exc:
        raise from_botocore_error(exc, what) from exc


def known_regions(session: Any) -> set[str]:
    """Every region botocore knows an EC2 endpoint for, across partitions (aws, aws-cn, aws-us-gov, ...)."""
    regions: set[str] = set()
    for partition in session.get_available_partitions():
        regions.update(session.get_available_regions("ec2", partition_name=partition))
    return regions


def check_region(region: str, known: set[str]) -> str:
    """`region` when it is a real EC2 region, else BadInput with the fix."""
    if not REGION_RE.match(region) or region not in known:
        raise BadInput(f"unknown AWS region {region!r}", f"did you mean {', '.join(near_regions(region, known))}?")
    return region


def near_regions(region: str, known: set[str], count: int = 4) -> list[str]:
    """Regions a mistyped `region` most likely meant: the same name with another number first (us-east-9 ->
    us-east-1, us-east-2), then the closest spellings, then the first of the list."""
    import difflib

    region = region.lower()
    stem = region.rstrip("0123456789")
    same = sorted(r for r in known if r.rstrip("0123456789") == stem)
    close = difflib.get_close_matches(region, sorted(known), n=count, cutoff=0.6)
    picked = list(dict.fromkeys([*same, *close]))[:count]
    return picked or sorted(known)[:count]


class Aws:
    """A boto3 session for one region and its clients, created on first use.

    `region` wins over `AWS_REGION`/`AWS_DEFAULT_REGION` and the profile's region; `profile` over `AWS_PROFILE`.
    """

    def __init__(self, region: str | None = None, profile: str | None = None) -> None:
        self._region = region
        self._profile = profile
        self._session: Any = None
        self._clients: dict[str, Any] = {}

    @property
    def session(self) -> Any:
        if self._session is None:
            import boto3
            from botocore.exceptions import BotoCoreError

            region = self._region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
            try:
                session = boto3.session.Session(profile_name=self._profile, region_name=region or None)
            except BotoCoreError as exc:
                raise from_botocore_error(exc, "open an AWS session") from exc
            if not session.region_name:
                raise BadInput("no AWS region set", "pass --region or set AWS_REGION, e.g. us-east-1")
            check_region(session.region_name, known_regions(session))
            self._session = session
        return self._session

    @property
    def region(self) -> str:
        return str(self.session.region_name)

    def client(self, service: str) -> Any:
        if service not in self._clients:
            from botocore.config import Config

            # standard retry mode backs off on throttling; AWS_MAX_ATTEMPTS (tests set 1) still applies
            config = Config(connect_timeout=10, read_timeout=60, retries={"mode": "standard"},
                            user_agent_extra="vmlab")
            self._clients[service] = self.session.client(service, config=config)
        return self._clients[service]

    @property
    def ec2(self) -> Any:
        return self.client("ec2")

    @property
    def ssm(self) -> Any:
        return self.client("ssm")
