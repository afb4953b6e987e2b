"""`--type m+t4` on --provider ec2 against moto: the generic form resolves to the cheapest type of vmlab's price
table that EC2 offers in the region and that fits (spot prices with --spot), the choice is printed with why, and a
form that is malformed or that nothing fits is one line of bad input; nothing is ever created to decide."""

from __future__ import annotations

import json

import boto3
import pytest

from harness.drivers.ec2cli import run_vmlab, vmlab_resources
from harness.emulators.moto import MotoServer
from harness.faults.awsfaults import FaultProxy
from tests.integration.test_ec2_cli import Seeded, assert_one_line_bad_input, aws, no_ssh_beyond_loopback, seed
from tests.integration.test_ec2_preflight import CREATING

pytestmark = pytest.mark.moto

__all__ = ["aws"]  # the fixture, imported for pytest


@pytest.mark.parametrize(("form", "chosen", "shown"), [
    ("m+t4", "g4dn.xlarge", "(4 vCPU, 16 GiB, 1x NVIDIA T4), on-demand ~$0.526/h"),
    ("l+a10g", "g5.2xlarge", "(8 vCPU, 32 GiB, 1x NVIDIA A10G), on-demand ~$1.212/h"),
    ("gpu=l4", "g6.xlarge", "1x NVIDIA L4"),
    ("cpu=8,mem=32", "t3.2xlarge", "(8 vCPU, 32 GiB), on-demand ~$0.3328/h"),
])
def test_a_generic_type_resolves_to_the_cheapest_that_fits(aws_faults: FaultProxy, moto_server: MotoServer,
                                                           monkeypatch: pytest.MonkeyPatch, form: str, chosen: str,
                                                           shown: str) -> None:
    monkeypatch.setenv("VMLAB_SSH_CIDR", "203.0.113.7/32")
    no_ssh_beyond_loopback(monkeypatch)
    direct = boto3.client("ec2", region_name="us-east-1", endpoint_url=moto_server.endpoint)
    seeded = seed(direct)
    before = vmlab_resources(direct)
    args = ["up", "job", "--provider", "ec2", "--image", seeded.image, "--type", form, "--dry-run"]
    text = run_vmlab(*args)
    assert text.exit_code == 0, text.output
    line = next(x for x in text.stdout.splitlines() if x.startswith(f"--type {form} -> "))
    assert line.startswith(f"--type {form} -> {chosen} ") and shown in line
    assert "the cheapest of" in line and "fitting type(s) in us-east-1" in line
    assert f"instance: {chosen} in us-east-1" in text.stdout
    doc = json.loads(run_vmlab(*args, "--json").stdout)
    assert doc["launch"]["instance_type"] == chosen and doc["type_choice"]["type"] == chosen
    assert vmlab_resources(direct) == before
    assert not [c for c in aws_faults.calls if c.startswith(CREATING)], aws_faults.calls


def test_with_spot_the_choice_is_ranked_by_spot_price(aws: Seeded) -> None:
    result = run_vmlab("up", "job", "--provider", "ec2", "--image", aws.image, "--type", "m+t4", "--spot",
                       "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    choice = json.loads(result.stdout)["type_choice"]
    assert choice["type"].startswith("g4dn.") and " spot ~$" in choice["why"]
    history = aws.ec2.describe_spot_price_history(InstanceTypes=[choice["type"]])["SpotPriceHistory"]
    assert choice["hourly"] == pytest.approx(max(float(h["SpotPrice"]) for h in history))


@pytest.mark.parametrize(("form", "fragments"), [
    ("2xl+2xa100", ["no instance type in us-east-1 gives at least 32 vCPU, 128 GiB, 2x A100 (--type 2xl+2xa100"]),
    ("m+tpu", ["--type 'm+tpu': unknown GPU model 'tpu'", "e.g. m+t4, l+a10g"]),
    ("cpu=eight", ["cpu='eight' is not a whole number"]),
])
def test_a_form_nothing_fits_or_a_malformed_one_is_refused_before_anything(aws: Seeded, form: str,
                                                                          fragments: list[str]) -> None:
    before = vmlab_resources(aws.ec2)
    result = run_vmlab("up", "job", "--provider", "ec2", "--image", aws.image, "--type", form)
    assert_one_line_bad_input(result, *fragments)
    assert "launching" not in result.output and vmlab_resources(aws.ec2) == before


def test_a_provider_without_offers_refuses_a_generic_type(tmp_path_factory: pytest.TempPathFactory) -> None:
    result = run_vmlab("up", "job", "--provider", "local", "--type", "m+t4")
    assert_one_line_bad_input(result, "the local provider cannot choose an instance type from a size (--type m+t4)")
