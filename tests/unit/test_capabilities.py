"""Which optional capabilities each registered provider has, and the refusal a caller gets for a missing one
(pure logic: the provider classes are imported, nothing is launched or called)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmlab.errors import BadInput
from vmlab.providers import PROVIDERS, name_for, names_with, require
from vmlab.providers.capabilities import (
    BuildsBaseImage,
    ChoosesTypes,
    CustomerKeys,
    Executes,
    Firewalled,
    Quotes,
    Regional,
    ScopesStorage,
    ServesLabs,
    SharesImages,
    ShipsImages,
    SweepsLeftovers,
)


@pytest.mark.parametrize(("capability", "providers"), [
    (Regional, ["ec2"]), (Quotes, ["ec2"]), (Firewalled, ["ec2"]), (CustomerKeys, ["ec2"]),
    (SweepsLeftovers, ["ec2"]), (SharesImages, ["ec2"]), (ScopesStorage, ["local", "ec2", "container"]),
    (BuildsBaseImage, ["local", "container"]), (ChoosesTypes, ["ec2"]), (Executes, ["container"]),
    (ShipsImages, ["container"]), (ServesLabs, ["container"]),
])
def test_registered_providers_have_the_capabilities_they_implement(capability: type, providers: list[str]) -> None:
    assert list(PROVIDERS) == ["local", "ec2", "container"]
    assert names_with(capability) == providers


def test_a_missing_capability_is_refused_with_the_providers_that_have_it(tmp_path: Path) -> None:
    from vmlab.providers.local.provider import LocalProvider

    local = LocalProvider(root=tmp_path)
    with pytest.raises(BadInput) as refused:
        require(local, SharesImages, "share images")
    assert str(refused.value).startswith("the local provider cannot share images")
    assert refused.value.hint == "use --provider ec2"
    assert require(local, ScopesStorage, "sync") is local
    assert local.grant_storage("s3://bucket/alice") is None and local.storage_scope("s3://bucket/alice") is None


def test_a_command_that_needs_a_capability_defaults_to_a_provider_that_has_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VMLAB_PROVIDER", raising=False)
    assert name_for(SweepsLeftovers, None) == "ec2"  # `vmlab gc` without --provider, as before capabilities
    assert name_for(BuildsBaseImage, None) == "local"
    assert name_for(SweepsLeftovers, "local") == "local"  # named: refused later, never silently replaced
    monkeypatch.setenv("VMLAB_PROVIDER", "local")
    assert name_for(SweepsLeftovers, None) == "ec2"
    assert name_for(ScopesStorage, None) == "local"


def test_ec2_scopes_s3_urls_only() -> None:
    from vmlab.providers.ec2.capabilities import CloudVerbs

    verbs = CloudVerbs()
    assert verbs.storage_scope("s3://bucket/alice/") == "s3://bucket/alice"
    assert verbs.storage_scope("gs://bucket/alice") is None
