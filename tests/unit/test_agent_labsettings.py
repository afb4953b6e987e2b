"""What `vmlab up` sends the agent (--idle, --max-hours, --sync) and when `vmlab down` refuses."""

from __future__ import annotations

import json

import pytest

from vmlab.agent.config import AgentConfig
from vmlab.agent.status import AgentStatus
from vmlab.errors import BadInput, HostError
from vmlab.providers.base import LaunchSpec
from vmlab.providers.ec2.launchplan import run_request
from vmlab.providers.ec2.profile import prefix_policy, profile_name
from vmlab.state import LabRecord
from vmlab.workflows.labagent import AgentSettings, check_can_remove, check_sync_url, parse_idle


@pytest.mark.parametrize(("text", "minutes"), [
    ("30m", 30), ("2h", 120), ("1h30m", 90), ("90s", 1.5), ("45", 45), ("0", 0), ("0.5h", 30), (" 10M ", 10),
])
def test_parse_idle(text: str, minutes: float) -> None:
    assert parse_idle(text) == minutes


@pytest.mark.parametrize("text", ["", "soon", "30x", "-5m", "h", "m30"])
def test_parse_idle_rejects(text: str) -> None:
    with pytest.raises(BadInput, match="is not a duration"):
        parse_idle(text)


@pytest.mark.parametrize("url", ["s3://my-bucket/alice", "s3://my.bucket", "gs://b/p",
                                 "https://acct.blob.core.windows.net/c/p", "az://acct/c/p"])
def test_sync_urls_accepted(url: str) -> None:
    assert check_sync_url(url) == url


@pytest.mark.parametrize("url", ["s3://", "s3://ab/x", "s3://UPPER/x", "s3://a..b/x", "ftp://x/y", "bucket/p",
                                 "https://"])
def test_sync_urls_rejected(url: str) -> None:
    with pytest.raises(BadInput):
        check_sync_url(url)


def test_defaults_and_previous_values() -> None:
    assert AgentSettings.from_flags() == AgentSettings(30, 24, None)
    previous = AgentSettings(10, 2, "s3://b/alice").section()
    assert AgentSettings.from_flags(previous=previous) == AgentSettings(10, 2, "s3://b/alice")
    assert AgentSettings.from_flags(idle="0", sync="", previous=previous) == AgentSettings(0, 2, None)
    with pytest.raises(BadInput, match="out of range"):
        AgentSettings.from_flags(max_hours=10_000)


def test_env_text_is_what_the_agent_reads() -> None:
    text = AgentSettings(30, 24, "s3://b/alice").env_text(now=1_000_000)
    env = dict(line.split("=", 1) for line in text.splitlines() if not line.startswith("#"))
    config = AgentConfig.from_env({**env, "VMLAB_AGENT_STATE_DIR": "/s"})
    assert (config.sync_url, config.idle_s, config.deadline) == ("s3://b/alice", 1800, 1_000_000 + 24 * 3600)
    # the folder is the recipe's (the units' Environment=): a value here would override it
    assert "VMLAB_DATA_DIR" not in text
    off = AgentSettings(0, 0, None).env_text(now=5)
    assert "VMLAB_DEADLINE=0\n" in off and "VMLAB_SYNC_URL=\n" in off


@pytest.mark.parametrize("url", ["s3://b/*", "s3://b/alice?", "s3://b/${aws:username}", "gs://b/a\nVMLAB_X=1",
                                 "https://a.blob.core.windows.net/c/*?sv=1&sig=abc"])
def test_sync_url_is_literal(url: str) -> None:
    with pytest.raises(BadInput, match="wildcard"):
        check_sync_url(url)


def test_sas_is_never_shown() -> None:
    url = "https://acct.blob.core.windows.net/c/alice?sv=2022-11-02&sig=SECRETSECRET"
    assert check_sync_url(url) == url  # an Azure URL carries its SAS in the query
    assert "SECRET" not in AgentSettings(30, 24, url).describe()
    record = LabRecord(name="l", provider="ec2", instance_id="i-1", image="ami-1", user="u", key_file="k",
                       host_key="h", token="t", host=None, port=22, created="", extra={"agent": {"sync_url": url}})
    assert "SECRET" not in json.dumps(record.to_json())
    assert record.extra["agent"]["sync_url"] == url  # kept in the private record itself


def test_down_refuses_only_with_unsynced_data() -> None:
    check_can_remove("lab", None, force=False)  # no agent status: nothing known to lose
    check_can_remove("lab", AgentStatus(last_sync=1.0), force=False)
    check_can_remove("lab", AgentStatus(pending=3), force=True)
    with pytest.raises(HostError, match=r"lab lab has data not yet synced to s3://b/a/ \(3 pending.*--force"):
        check_can_remove("lab", AgentStatus(url="s3://b/a/", pending=3), force=False)
    with pytest.raises(HostError, match="deletes held"):
        check_can_remove("lab", AgentStatus(held_deletes=30), force=False)


def test_whole_bucket_policy_and_names() -> None:
    policy = prefix_policy("b", "")
    assert "Condition" not in policy["Statement"][0]
    assert policy["Statement"][1]["Resource"] == "arn:aws:s3:::b/*"
    assert profile_name("b", "alice") != profile_name("b", "bob") and len(profile_name("b", "x" * 500)) <= 64


def test_run_request_attaches_the_profile_only_when_asked() -> None:
    root = {"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 8}}
    common = {"ami": "ami-1", "root": root, "key_name": "k", "group_id": "sg-1", "instance_type": "t3.micro",
              "tags": {}, "user_data": "", "client_token": "t"}
    spec = LaunchSpec(name="lab", image="ami-1", ssh_public_key="ssh-ed25519 AAAA")
    assert "IamInstanceProfile" not in run_request(spec, **common)
    spec = LaunchSpec(name="lab", image="ami-1", ssh_public_key="ssh-ed25519 AAAA", instance_profile="vmlab-sync-x")
    assert run_request(spec, **common)["IamInstanceProfile"] == {"Name": "vmlab-sync-x"}


def test_missing_agent_is_reported_only_when_it_matters() -> None:
    from vmlab.workflows.labagent import missing_agent_warning

    both = ["vmlab-sync.service", "vmlab-idle.service"]
    assert missing_agent_warning(AgentSettings(0, 0, None), both) == ""
    assert missing_agent_warning(AgentSettings(30, 24, "s3://b/a"), []) == ""
    text = missing_agent_warning(AgentSettings(30, 24, "s3://b/a"), both)
    assert "the idle stop and time limit and sync will not happen" in text and "recipes/lab.py" in text
    assert "sync" not in missing_agent_warning(AgentSettings(30, 0, None), both).split("so ")[1]


def test_azure_errors_mask_the_sas_signature() -> None:
    from vmlab.agent.stores.azure import _SIG

    text = ("upload failed: cannot reach the storage account: Max retries exceeded with url: "
            "/c/alice/x.ipynb?sv=2022-11-02&sp=rwdl&sig=AbCd%2B1234secretSIG%3D (Caused by NameResolutionError)")
    masked = _SIG.sub(r"\1***", text)
    assert "secretSIG" not in masked and "&sig=*** (Caused by" in masked and "sv=2022-11-02" in masked
