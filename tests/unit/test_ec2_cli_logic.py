"""Pure logic behind the ec2 command-line surface: the price table, instance type offers, sharing grantees and
their checks, KMS keys per region, the unshareable-snapshot warning, uptime and cost estimates."""

from __future__ import annotations

import datetime as dt

import pytest

from vmlab.errors import BadInput
from vmlab.providers.base import Instance, LaunchSpec
from vmlab.providers.ec2 import launchplan, prices, sharing
from vmlab.providers.ec2.offers import latest_spot, to_offer
from vmlab.workflows.listing import cost_so_far, uptime_seconds

G4DN = {"InstanceType": "g4dn.xlarge", "VCpuInfo": {"DefaultVCpus": 4}, "MemoryInfo": {"SizeInMiB": 16384},
        "ProcessorInfo": {"SupportedArchitectures": ["x86_64"]},
        "GpuInfo": {"Gpus": [{"Name": "T4", "Manufacturer": "NVIDIA", "Count": 1}], "TotalGpuMemoryInMiB": 16384}}
ORG = "arn:aws:organizations::111122223333:organization/o-abcdef1234"
OU = "arn:aws:organizations::111122223333:ou/o-abcdef1234/ou-ab12-cdef5678"


def test_price_table_covers_the_common_types_and_says_nothing_it_does_not_know() -> None:
    for t in ("g4dn.xlarge", "g5.xlarge", "g6.xlarge", "p3.2xlarge", "t3.large", "m5.large", "c5.large"):
        assert prices.on_demand("us-east-1", t)
    assert prices.on_demand("eu-west-1", "g4dn.xlarge") > prices.on_demand("us-east-1", "g4dn.xlarge")  # type: ignore[operator]
    assert prices.on_demand("sa-east-1", "g4dn.xlarge") is None
    assert prices.on_demand("us-east-1", "x9.mega") is None


def test_latest_spot_price_per_zone() -> None:
    history = [
        {"AvailabilityZone": "us-east-1a", "SpotPrice": "0.20", "Timestamp": dt.datetime(2024, 6, 1, 10)},
        {"AvailabilityZone": "us-east-1a", "SpotPrice": "0.18", "Timestamp": dt.datetime(2024, 6, 1, 12)},
        {"AvailabilityZone": "us-east-1b", "SpotPrice": "0.25", "Timestamp": dt.datetime(2024, 6, 1, 11)},
        {"AvailabilityZone": "us-east-1c", "SpotPrice": "n/a", "Timestamp": dt.datetime(2024, 6, 1, 11)},
    ]
    assert latest_spot(history) == {"us-east-1a": 0.18, "us-east-1b": 0.25}


def test_offer_describes_type_gpu_and_prices() -> None:
    offer = to_offer(G4DN, "us-east-1", [{"AvailabilityZone": "us-east-1a", "SpotPrice": "0.16"},
                                         {"AvailabilityZone": "us-east-1b", "SpotPrice": "0.21"}])
    assert (offer.vcpus, offer.memory_mib, offer.gpu_model, offer.gpu_count) == (4, 16384, "NVIDIA T4", 1)
    text = offer.describe()
    assert text.startswith("g4dn.xlarge in us-east-1: 4 vCPU, 16 GiB, 1x NVIDIA T4 (16 GiB); on-demand ~$0.526/h")
    assert "spot now $0.16-$0.21/h across 2 zone(s)" in text
    assert offer.hourly(spot=True) == 0.21 and offer.hourly(spot=False) == 0.526  # spot errs high
    cpu = to_offer({"InstanceType": "c7i.large", "VCpuInfo": {"DefaultVCpus": 2}}, "sa-east-1")
    assert "price unknown" in cpu.describe() and cpu.hourly(spot=True) is None and "GPU" not in cpu.describe()
    assert offer.to_json()["gpu_count"] == 1 and "estimate" in offer.to_json()["price_note"]


def test_grantees() -> None:
    who = sharing.Grantees.checked(["111122223333", "111122223333"], [ORG], [OU], public=True)
    assert who.launch_permissions() == [{"UserId": "111122223333"}, {"OrganizationArn": ORG},
                                        {"OrganizationalUnitArn": OU}, {"Group": "all"}]
    assert who.volume_permission_args() == {"UserIds": ["111122223333"], "GroupNames": ["all"]}
    assert sharing.Grantees.checked(orgs=[ORG]).volume_permission_args() == {}  # orgs cannot be named on snapshots
    with pytest.raises(BadInput, match="nobody to share with"):
        sharing.Grantees.checked()


@pytest.mark.parametrize("bad", ["12345678901", "1234567890123", "12345678901a", " ", "arn:aws:iam::111122223333:root"])
def test_account_ids_are_12_digits(bad: str) -> None:
    with pytest.raises(BadInput, match="account ids are exactly 12 digits"):
        sharing.check_accounts([bad])


@pytest.mark.parametrize("bad", ["o-abcdef1234", "arn:aws:organizations::111122223333:organization/o-AB",
                                 "arn:aws:organizations::1111:organization/o-abcdef1234", OU])
def test_org_arns(bad: str) -> None:
    assert sharing.check_org_arns([ORG]) == (ORG,)
    with pytest.raises(BadInput, match="not an organization ARN"):
        sharing.check_org_arns([bad])


def test_ou_arns() -> None:
    assert sharing.check_ou_arns([OU]) == (OU,)
    with pytest.raises(BadInput, match="not an organizational unit ARN"):
        sharing.check_ou_arns([ORG])


def test_regions_and_kms_keys_per_region() -> None:
    regions = sharing.check_regions(" eu-west-1, us-west-2,eu-west-1", {"eu-west-1", "us-west-2"})
    assert regions == ("eu-west-1", "us-west-2")
    with pytest.raises(BadInput, match="mars-1"):
        sharing.check_regions("eu-west-1,mars-1")
    arn = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    assert sharing.kms_keys_by_region([arn, "us-west-2=alias/lab"], regions) == {
        "eu-west-1": arn, "us-west-2": "alias/lab"}
    assert sharing.kms_keys_by_region(["alias/lab"], regions) == {"eu-west-1": "alias/lab", "us-west-2": "alias/lab"}
    with pytest.raises(BadInput, match="not in --regions"):
        sharing.kms_keys_by_region(["ap-south-1=alias/lab"], regions)


@pytest.mark.parametrize("key", ["alias/vmlab", "1234abcd-12ab-34cd-56ef-1234567890ab",
                                 "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
                                 "arn:aws:kms:us-east-1:123456789012:alias/vmlab"])
def test_kms_keys_accepted(key: str) -> None:
    assert launchplan.check_kms_key(key) == key


@pytest.mark.parametrize(("key", "fragment"), [("my key", "not a KMS key"), ("alias/aws/ebs", "AWS-managed"),
                                               ("arn:aws:kms:us-east-1:123456789012:alias/aws/ebs", "AWS-managed")])
def test_kms_keys_refused(key: str, fragment: str) -> None:
    with pytest.raises(BadInput, match=fragment):
        launchplan.check_kms_key(key)


def test_run_request_uses_the_kms_key() -> None:
    spec = LaunchSpec(name="b", image="ami-0123456789abcdef0", ssh_public_key="ssh-ed25519 AAAA x")
    root = {"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 8}}
    args = dict(ami="ami-0123456789abcdef0", root=root, key_name="k", group_id="sg-1", instance_type="t3.large",
                tags={}, user_data="", client_token="t")
    assert "KmsKeyId" not in launchplan.run_request(spec, **args)["BlockDeviceMappings"][0]["Ebs"]  # type: ignore[arg-type]
    ebs = launchplan.run_request(spec, **args, kms_key="alias/lab")["BlockDeviceMappings"][0]["Ebs"]  # type: ignore[arg-type]
    assert ebs["KmsKeyId"] == "alias/lab" and ebs["Encrypted"] is True


def test_unshareable_snapshots() -> None:
    managers = {"arn:aws:kms:us-east-1:1:key/aws": "AWS", "arn:aws:kms:us-east-1:1:key/mine": "CUSTOMER"}
    snapshots = [{"SnapshotId": "snap-plain", "Encrypted": False},
                 {"SnapshotId": "snap-awsebs", "Encrypted": True, "KmsKeyId": "arn:aws:kms:us-east-1:1:key/aws"},
                 {"SnapshotId": "snap-mine", "Encrypted": True, "KmsKeyId": "arn:aws:kms:us-east-1:1:key/mine"},
                 {"SnapshotId": "snap-unknown", "Encrypted": True}]
    assert sharing.unshareable_snapshots(snapshots, managers.get) == ["snap-awsebs", "snap-unknown"]


def test_uptime_and_cost() -> None:
    now = dt.datetime(2024, 6, 1, 12, 30, tzinfo=dt.timezone.utc)

    def inst(state: str, launched: str | None) -> Instance:
        return Instance(id="i-1", name="lab", state=state, host=None, port=22, user="u", image="ami-1",
                        provider="ec2", launched_at=launched)

    assert uptime_seconds(inst("running", "2024-06-01T10:00:00+00:00"), now) == 9000
    assert uptime_seconds(inst("running", "2024-06-01T10:00:00Z"), now) == 9000
    assert uptime_seconds(inst("stopped", "2024-06-01T10:00:00+00:00"), now) is None
    assert uptime_seconds(inst("running", None), now) is None and uptime_seconds(None, now) is None
    assert cost_so_far(0.526, 9000) == 1.315 and cost_so_far(None, 9000) is None and cost_so_far(1.0, None) is None


KNOWN_REGIONS = {"us-east-1", "us-east-2", "us-west-1", "us-west-2", "us-iso-east-1", "us-isob-east-1",
                 "eu-west-1", "eu-west-2", "eu-central-1", "ap-south-1"}


@pytest.mark.parametrize(("typed", "first"), [("us-east-9", ["us-east-1", "us-east-2"]),
                                              ("eu-wset-1", ["eu-west-1"]), ("US-EAST-3", ["us-east-1", "us-east-2"])])
def test_an_unknown_region_suggests_the_near_ones(typed: str, first: list[str]) -> None:
    from vmlab.providers.ec2.client import check_region

    with pytest.raises(BadInput) as e:
        check_region(typed, KNOWN_REGIONS)
    hint = str(e.value).split("did you mean ")[1]
    assert hint.startswith(", ".join(first)) and "us-iso" not in hint, str(e.value)


def test_offline_without_a_cidr_names_the_flag_and_the_variable() -> None:
    from vmlab.errors import HostError
    from vmlab.providers.ec2.network import public_ip

    with pytest.raises(HostError) as e:
        public_ip("http://127.0.0.1:9/", timeout=1)  # nothing listens on the discard port: like being offline
    assert "--ssh-cidr" in str(e.value) and "VMLAB_SSH_CIDR" in str(e.value)


@pytest.mark.parametrize(("given", "text"), [({"spot": True}, "--spot only applies to"),
                                             ({"spot": True, "region": "x"}, "--spot, --region only apply to")])
def test_option_refusal_grammar(given: dict[str, object], text: str) -> None:
    from vmlab.cli.options import check_options

    with pytest.raises(BadInput, match=text):
        check_options("local", **given)


SUBNETS = {"us-east-1a": "subnet-a", "us-east-1b": "subnet-b", "us-east-1e": "subnet-e"}


@pytest.mark.parametrize(("offered", "expected"), [
    (None, (None, None)),  # not allowed to ask: EC2 picks, as before
    ({"us-east-1a", "us-east-1b", "us-east-1e"}, (None, None)),  # every zone offers it: EC2 spreads capacity
    ({"us-east-1b", "us-east-1c"}, ("subnet-b", "us-east-1b")),  # only b of the default subnets' zones
])
def test_a_zone_that_offers_the_type_is_chosen(offered: set[str] | None,
                                                expected: tuple[str | None, str | None]) -> None:
    from vmlab.providers.ec2.placement import choose_subnet

    assert choose_subnet("g4dn.xlarge", "us-east-1", offered, SUBNETS) == expected


def test_no_default_subnet_in_an_offering_zone_names_those_zones() -> None:
    from vmlab.providers.ec2.placement import choose_subnet, not_offered

    with pytest.raises(BadInput, match=r"offered in us-east-1 only in us-east-1c, us-east-1d, where the default"):
        choose_subnet("p3dn.24xlarge", "us-east-1", {"us-east-1d", "us-east-1c"}, SUBNETS)
    assert "it is offered in eu-west-1, us-east-2" in str(not_offered("x.large", "us-east-1", ["eu-west-1",
                                                                                               "us-east-2"]))


@pytest.mark.parametrize(("itype", "spot", "code"), [("g4dn.xlarge", False, "L-DB2E81BA"), ("vt1.3xlarge", False,
                                                     "L-DB2E81BA"), ("p3.2xlarge", True, "L-7212CCBC"),
                                                     ("t3.large", False, "L-1216C47A"), ("inf2.xlarge", False,
                                                     "L-1945791B"), ("i3.large", True, "L-34B43A08")])
def test_the_vcpu_quota_of_a_family(itype: str, spot: bool, code: str) -> None:
    from vmlab.providers.ec2.quotas import family_quota

    assert family_quota(itype, spot)[0] == code
