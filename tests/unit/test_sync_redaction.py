"""A sync URL's query (an Azure SAS token) is never shown: not in the refusal to move a lab's bucket access."""

from __future__ import annotations

import pytest

from vmlab.errors import BadInput
from vmlab.providers.ec2 import Ec2Provider
from vmlab.state import AgentSection
from vmlab.workflows.labagent import AgentSettings
from vmlab.workflows.labs import _check_same_profile


def test_moving_an_azure_lab_to_s3_does_not_print_the_sas_token() -> None:
    previous = AgentSection(sync_url="https://acct.blob.core.windows.net/labs/alice?sv=1&sig=SECRET")
    with pytest.raises(BadInput) as refused:
        _check_same_profile(Ec2Provider(region="us-east-1"), "lab", previous,
                            AgentSettings(sync_url="s3://class-bucket/alice"))
    assert "SECRET" not in str(refused.value) and "labs/alice?…" in str(refused.value)
