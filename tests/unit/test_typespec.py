"""Generic instance types (vmlab.typespec) and the EC2 choice among offers (typechoice.pick): pure, no cloud."""

from __future__ import annotations

import pytest

from vmlab.errors import BadInput
from vmlab.providers.ec2.offers import Offer
from vmlab.providers.ec2.typechoice import pick
from vmlab.typespec import TypeRequest, is_generic, parse_request


@pytest.mark.parametrize(("text", "fields"), [
    ("m+t4", dict(vcpus=4, memory_gib=16, gpu="t4", gpus=1)),
    ("l+a10g", dict(vcpus=8, memory_gib=32, gpu="a10g", gpus=1)),
    ("gpu=t4", dict(gpu="t4", gpus=1)),
    ("cpu=8,mem=32", dict(vcpus=8, memory_gib=32)),
    ("s", dict(vcpus=2, memory_gib=8)),
    ("xl+2xt4", dict(vcpus=16, memory_gib=64, gpu="t4", gpus=2)),
    ("gpu+gpumem=20", dict(gpus=1, gpu_memory_gib=20)),
    ("M + T4", dict(vcpus=4, memory_gib=16, gpu="t4", gpus=1)),
    ("arch=arm64,s", dict(vcpus=2, memory_gib=8, arch="arm64")),
])
def test_generic_forms_parse(text: str, fields: dict[str, object]) -> None:
    assert parse_request(text) == TypeRequest(text=text, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "fragment"), [
    ("m+zz9", "unknown GPU model 'zz9'"), ("cpu=lots", "cpu='lots' is not a whole number"),
    ("m+l", "given twice"), ("m++t4", "empty word"), ("size=m", "unknown key 'size'"),
    ("cpu=0", "out of range"), ("arch=sparc", "arch='sparc'"), ("m+t4!", "is neither a size"),
])
def test_malformed_forms_are_one_line_bad_input_naming_the_forms(text: str, fragment: str) -> None:
    with pytest.raises(BadInput) as bad:
        parse_request(text)
    line = str(bad.value)
    assert fragment in line and "\n" not in line and "m+t4" in line


def test_a_concrete_type_is_not_generic() -> None:
    assert not is_generic("g4dn.xlarge") and is_generic("m+t4") and is_generic("gpu") and is_generic("mem=7.5")


def offer(name: str, vcpus: int, gib: int, price: float | None, gpu: str | None = None, count: int = 0,
          spot: dict[str, float] | None = None, arch: str = "x86_64") -> Offer:
    return Offer(name, "us-east-1", vcpus, gib * 1024, gpu, count, count * 16384 or None, (arch,), price,
                 spot or {})


OFFERS = [
    offer("t3.xlarge", 4, 16, 0.1664), offer("m5.xlarge", 4, 16, 0.192), offer("t4g.xlarge", 4, 16, 0.1344,
                                                                                arch="arm64"),
    offer("g4dn.xlarge", 4, 16, 0.526, "NVIDIA T4", 1, {"us-east-1a": 0.3, "us-east-1b": 0.25}),
    offer("g4dn.2xlarge", 8, 32, 0.752, "NVIDIA T4", 1, {"us-east-1a": 0.2}),
    offer("g5.xlarge", 4, 16, 1.006, "NVIDIA A10G", 1), offer("g5.2xlarge", 8, 32, 1.212, "NVIDIA A10G", 1),
    offer("x9.huge", 64, 512, None),
]


@pytest.mark.parametrize(("text", "spot", "chosen"), [
    ("m+t4", False, "g4dn.xlarge"),
    ("m+t4", True, "g4dn.2xlarge"),  # spot: the 2xlarge is cheaper now (ranked by the highest zone's price)
    ("l+a10g", False, "g5.2xlarge"),
    ("m", False, "t3.xlarge"),  # the cheaper arm64 t4g is not x86_64
    ("m+arch=arm64", False, "t4g.xlarge"),
    ("gpu", False, "g4dn.xlarge"),
])
def test_the_cheapest_fitting_offer_is_chosen(text: str, spot: bool, chosen: str) -> None:
    choice = pick(parse_request(text), OFFERS, spot, "us-east-1")
    assert choice.instance_type == chosen
    assert choice.why.startswith(f"--type {text} -> {chosen} (") and "\n" not in choice.why
    assert ("spot ~$" in choice.why) == (spot and chosen.startswith("g4dn"))


def test_nothing_fits_is_bad_input_in_one_line() -> None:
    with pytest.raises(BadInput) as bad:
        pick(parse_request("2xl+2xa100"), OFFERS, False, "us-east-1")
    assert "no instance type in us-east-1 gives at least 32 vCPU, 128 GiB, 2x A100" in str(bad.value)
    with pytest.raises(BadInput):  # a type without a table price cannot be ranked, so never chosen
        pick(parse_request("cpu=64"), OFFERS, False, "us-east-1")
