"""Sync URLs: the one grammar `vmlab up --sync` checks and the lab agent opens (vmlab.agent.stores).

- `s3://bucket/prefix`: an S3 bucket name (3-63 lowercase letters, digits, dots, hyphens).
- `gs://bucket/prefix`: a Google Cloud Storage bucket.
- `az://account/container/prefix`: Azure Blob Storage (the SAS comes from the agent's environment).
- `https://ACCOUNT.blob.core.windows.net/container/prefix[?SAS]`: the same, the SAS in the query.
- `http(s)://LOOPBACK:PORT/account/container/prefix[?SAS]`: an Azure emulator on the machine itself
  (Azurite); plain http is accepted for a loopback host only, so a SAS never crosses a network in the clear.

A prefix is used literally: `*`, `?` and `$` outside an https query are refused (in the EC2 IAM policy they would
grant more than the prefix), and so is any control character (it would add lines to the agent's env file).
Every refusal is BadInput naming the URL without its query (a SAS is a secret).

Example::

    parse("s3://my-bucket/alice/")            # SyncUrl(store="s3", bucket="my-bucket", prefix="alice")
    parse("az://acct/lab/alice").endpoint     # "https://acct.blob.core.windows.net"
    parse("ftp://host/x", what="--sync")      # BadInput: --sync 'ftp://host/x' is not a storage URL
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from vmlab.errors import BadInput

URL_FORMS = ("s3://bucket/prefix, az://account/container/prefix, "
             "https://ACCOUNT.blob.core.windows.net/container/prefix or gs://bucket/prefix")
AZURE_BLOB_SUFFIX = ".blob.core.windows.net"
_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class SyncUrl:
    """A parsed sync URL. `store` is s3, gs or azure; `bucket` the S3/GCS bucket or the Azure container; `prefix`
    without surrounding slashes; for Azure `account` and `endpoint` (the account URL requests go to) and `query`
    (a SAS, secret)."""

    store: str
    bucket: str
    prefix: str
    account: str = ""
    endpoint: str = ""
    query: str = field(default="", repr=False)

    @property
    def scope(self) -> str:
        """What the URL gives access to, without credentials: e.g. "s3://bucket/prefix"."""
        if self.store == "azure":
            return f"{self.endpoint}/{self.bucket}/{self.prefix}"
        return f"{self.store}://{self.bucket}/{self.prefix}"


def parse(url: str, what: str = "sync URL") -> SyncUrl:
    """`url` parsed by the rules above; BadInput naming it as `what` (e.g. "--sync") otherwise."""
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("s3", "gs", "az", "https", "http"):
        raise BadInput(f"{what} {redact(url)!r} is not a storage URL", f"use {URL_FORMS}")
    path = url.partition("?")[0] if scheme in ("https", "http") else url
    if any(c in path for c in "*?$") or any(ord(c) < 32 or ord(c) == 127 or c.isspace() for c in url):
        raise BadInput(f"{what} {redact(url)!r} holds a wildcard, '$', a space or a control character",
                       "name one bucket prefix literally, e.g. s3://bucket/alice")
    if scheme in ("s3", "gs"):
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise BadInput(f"{what} {url!r} names no bucket", f"use {URL_FORMS}")
        if scheme == "s3" and (not _S3_BUCKET.match(bucket) or ".." in bucket):
            raise BadInput(f"{what} {url!r} does not name a valid S3 bucket",
                           "use s3://bucket/prefix (bucket: 3-63 lowercase letters, digits, dots, hyphens)")
        return SyncUrl(scheme, bucket, prefix.strip("/"))
    return _azure(url, what)


def _azure(url: str, what: str) -> SyncUrl:
    parts = urlsplit(url)
    host = parts.hostname or ""
    segments = [s for s in parts.path.split("/")]
    segments = segments[1:] if segments and segments[0] == "" else segments
    if parts.scheme == "az":
        account, endpoint = host, f"https://{host}{AZURE_BLOB_SUFFIX}"
    elif is_loopback(host):  # an emulator: the account is the first path segment
        account = segments.pop(0) if segments else ""
        endpoint = f"{parts.scheme}://{parts.netloc}/{account}"
    elif parts.scheme == "http":
        raise BadInput(f"{what} {redact(url)!r} is plain http",
                       "use https:// (a SAS must not cross the network in the clear)")
    elif host.endswith(AZURE_BLOB_SUFFIX):
        account, endpoint = host[: -len(AZURE_BLOB_SUFFIX)], f"https://{host}"
    else:
        raise BadInput(f"{what} {redact(url)!r} is not a storage URL", f"use {URL_FORMS}")
    container = segments.pop(0) if segments else ""
    if not account or not container:
        raise BadInput(f"{what} {redact(url)!r} names no account or container", f"use {URL_FORMS}")
    return SyncUrl("azure", container, "/".join(segments).strip("/"), account, endpoint, parts.query)


def redact(url: str) -> str:
    """`url` without its query string, which may carry a secret (an Azure SAS token): for anything shown,
    logged or recorded. Example: `redact("https://a.blob.core.windows.net/c/p?sv=1&sig=x")` ends in `?…`."""
    base, sep, _query = url.partition("?")
    return base + ("?…" if sep else "")


def is_loopback(host: str) -> bool:
    """Whether `host` is this machine (an emulator), where plain http is acceptable."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
