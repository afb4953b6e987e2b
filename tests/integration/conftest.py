"""Fixtures of the integration tests: for the agent's process tests (test_agent_robust, test_agent_safety) an S3
client on the moto server and a fresh bucket with an empty data folder; for the flows through a provider with the
base verbs only (test_provider_contract, test_run) the `cloud` of sandbox hosts behind provider "sandbox"."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from harness.clouds.sandboxprovider import Cloud, sandbox_cloud

PREFIX = "alice/data/"


@pytest.fixture()
def s3(moto_server) -> Any:
    return boto3.client("s3", endpoint_url=moto_server.endpoint)


@pytest.fixture()
def lab(s3, tmp_path: Path) -> tuple[Path, str, str, Path]:
    """(folder, bucket, url, state dir)."""
    bucket = f"vmlab-agent-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    folder = tmp_path / "data"
    folder.mkdir()
    return folder, bucket, f"s3://{bucket}/{PREFIX}", tmp_path / "state"


@pytest.fixture(scope="module")
def cloud() -> Iterator[Cloud]:
    """Provider "sandbox" (harness/clouds/sandboxprovider.py) registered for the module, its boxes stopped after."""
    with sandbox_cloud() as made:
        yield made
