"""`vmlab ls` / `stop` / `down` on ec2 labs against moto: state, type, market, uptime, hourly price and the cost
estimate per lab, records of older vmlab versions (no price, no region) still load, and the region a lab was
launched in is used again. The labs are launched with vmlab's provider and recorded as `vmlab up` records them
(moto boots nothing, so the JupyterLab half of `up` cannot run here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest

from harness.drivers.ec2cli import register, run_vmlab
from harness.emulators.moto import MotoServer
from vmlab import keys
from vmlab.providers.base import LaunchSpec
from vmlab.providers.ec2 import Ec2Provider
from vmlab.state import LabRecord, LabStore

pytestmark = pytest.mark.moto


@pytest.fixture()
def labs(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    moto_server.reset()
    monkeypatch.setenv("VMLAB_SSH_CIDR", "203.0.113.7/32")
    ec2 = boto3.client("ec2", region_name="us-east-1")
    image = register(ec2, "vmlab-lab-ab12", tags={"vmlab:recipe-hash": "ab12"})
    provider = Ec2Provider(poll=0.05, timeout=30.0)
    pub = keys.generate("t").public

    def launch(name: str, instance_type: str) -> Any:
        return provider.launch(LaunchSpec(name=name, image=image, ssh_public_key=pub, instance_type=instance_type,
                                          tags={"vmlab:lab": name, "vmlab:run": f"up-{name}"}))

    gpu, old, orphan = launch("gpu", "g4dn.xlarge"), launch("old", "t3.large"), launch("orphan", "t3.large")
    store = LabStore()
    store.put(LabRecord(name="gpu", provider="ec2", instance_id=gpu.id, image=image, user="ubuntu",
                        key_file="/nonexistent", host_key="", token="", host=gpu.host, region="us-east-1",
                        instance_type="g4dn.xlarge", hourly_price=0.526))
    # a record written before prices and regions were recorded
    legacy = {"name": "old", "provider": "ec2", "instance_id": old.id, "image": image, "user": "ubuntu",
              "key_file": "/nonexistent", "host_key": "", "token": "", "host": old.host, "port": 22,
              "jupyter_port": 8888, "created": "", "instance_type": "t3.large", "spot": False}
    Path(store.root / "old.json").write_text(json.dumps(legacy))
    return {"gpu": gpu.id, "old": old.id, "orphan": orphan.id}


def rows_by_name(result: Any) -> dict[str, dict[str, Any]]:
    assert result.exit_code == 0, result.output
    return {r["name"]: r for r in json.loads(result.stdout)["labs"]}


def test_ls_shows_uptime_and_estimated_cost(labs: dict[str, Any]) -> None:
    rows = rows_by_name(run_vmlab("ls", "--provider", "ec2", "--json"))
    assert set(rows) == {"gpu", "old", "orphan"}
    gpu = rows["gpu"]
    assert gpu["state"] == "running" and gpu["type"] == "g4dn.xlarge" and gpu["market"] == "on-demand"
    assert gpu["region"] == "us-east-1" and gpu["hourly_price"] == 0.526
    assert 0 <= gpu["uptime_s"] < 600
    assert gpu["cost_so_far"] == pytest.approx(0.526 * gpu["uptime_s"] / 3600, abs=0.001)
    assert rows["old"]["hourly_price"] is None and rows["old"]["cost_so_far"] is None  # unknown, not 0
    orphan = rows["orphan"]
    assert orphan["state"] == "running (no local record)" and orphan["hourly_price"] == 0.0832  # the table's
    text = run_vmlab("ls", "--provider", "ec2")
    assert "g4dn.xlarge" in text.stdout and "0.526" in text.stdout and "estimate" in text.stdout


def test_stop_and_down_use_the_recorded_region(labs: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-1")  # the default region moved on; the lab did not
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert run_vmlab("stop", "gpu").exit_code == 0
    rows = rows_by_name(run_vmlab("ls", "--json"))
    assert rows["gpu"]["state"] == "stopped" and rows["gpu"]["uptime_s"] is None
    assert rows["gpu"]["cost_so_far"] is None
    assert run_vmlab("ls", "--region", "eu-west-1", "--json").exit_code == 0
    assert "gpu" not in rows_by_name(run_vmlab("ls", "--region", "eu-west-1", "--json"))
    down = run_vmlab("down", "gpu", "--json")
    assert down.exit_code == 0, down.output
    east = boto3.client("ec2", region_name="us-east-1")
    state = east.describe_instances(InstanceIds=[labs["gpu"]])["Reservations"][0]["Instances"][0]["State"]["Name"]
    assert state == "terminated"
