"""The fault-injecting proxy in front of moto (harness/faults/awsfaults.py): it records the right action names for
each AWS protocol, its injected errors are the ones botocore raises and never reach moto, and it targets, delays
and reports calls as the zero-leak tests of the ec2 provider rely on. boto3 is called directly here because the
proxy, not vmlab, is under test."""

from __future__ import annotations

import http.client
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from harness.emulators.moto import MotoServer
from harness.faults.awsfaults import FaultProxy

pytestmark = pytest.mark.moto


def direct_ec2(moto_server: MotoServer) -> Any:
    """An EC2 client that talks to moto itself, bypassing the proxy: what moto really holds."""
    return boto3.client("ec2", endpoint_url=moto_server.endpoint)


def group_names(moto_server: MotoServer) -> set[str]:
    groups = direct_ec2(moto_server).describe_security_groups()["SecurityGroups"]
    return {group["GroupName"] for group in groups} - {"default"}


def error_code(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    response = excinfo.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def test_records_actions_of_each_protocol_in_order(aws_faults: FaultProxy) -> None:
    ec2, sts, ssm = boto3.client("ec2"), boto3.client("sts"), boto3.client("ssm")
    ec2.describe_regions()
    ec2.create_security_group(GroupName="web", Description="web")
    sts.get_caller_identity()
    ssm.put_parameter(Name="/vmlab/x", Value="1", Type="String")
    assert ssm.get_parameter(Name="/vmlab/x")["Parameter"]["Value"] == "1"

    assert aws_faults.calls == ["DescribeRegions", "CreateSecurityGroup", "GetCallerIdentity", "PutParameter",
                                "GetParameter"]
    assert [r.service for r in aws_faults.records] == ["ec2", "ec2", "sts", "ssm", "ssm"]
    assert [r.index for r in aws_faults.records] == [0, 1, 2, 3, 4]
    assert all(r.status == 200 and not r.injected for r in aws_faults.records)


def test_injected_ec2_error_is_raised_and_never_reaches_moto(aws_faults: FaultProxy,
                                                              moto_server: MotoServer) -> None:
    ec2 = boto3.client("ec2")
    aws_faults.fail("CreateSecurityGroup", code="RequestLimitExceeded", status=503, message="slow down")
    with pytest.raises(ClientError) as excinfo:
        ec2.create_security_group(GroupName="web", Description="web")
    assert error_code(excinfo) == ("RequestLimitExceeded", 503)
    assert "slow down" in str(excinfo.value)
    assert group_names(moto_server) == set()
    # Had moto seen the failed call, this one would be InvalidGroup.Duplicate.
    ec2.create_security_group(GroupName="web", Description="web")
    assert group_names(moto_server) == {"web"}
    assert [(r.action, r.status, r.injected) for r in aws_faults.records] == [
        ("CreateSecurityGroup", 503, True), ("CreateSecurityGroup", 200, False)]


def test_injected_json_and_sts_errors_parse_as_their_codes(aws_faults: FaultProxy) -> None:
    ssm, sts = boto3.client("ssm"), boto3.client("sts")
    ssm.put_parameter(Name="/vmlab/ami", Value="ami-12345678", Type="String")
    aws_faults.fail("GetParameter", code="ParameterNotFound", status=400)
    aws_faults.fail("GetCallerIdentity", code="ExpiredToken", status=403)
    with pytest.raises(ssm.exceptions.ParameterNotFound):
        ssm.get_parameter(Name="/vmlab/ami")
    with pytest.raises(ClientError) as excinfo:
        sts.get_caller_identity()
    assert error_code(excinfo) == ("ExpiredToken", 403)
    # Only the targeted call failed: the parameter is still there and the next calls go through.
    assert ssm.get_parameter(Name="/vmlab/ami")["Parameter"]["Value"] == "ami-12345678"
    assert sts.get_caller_identity()["Account"].isdigit()


def test_nth_call_of_an_action_counts_from_when_the_rule_is_set(aws_faults: FaultProxy,
                                                                moto_server: MotoServer) -> None:
    ec2 = boto3.client("ec2")
    ec2.create_security_group(GroupName="before", Description="x")
    aws_faults.fail("CreateSecurityGroup", nth=2)
    failed = []
    for name in ("one", "two", "three"):
        try:
            ec2.create_security_group(GroupName=name, Description="x")
        except ClientError as exc:
            failed.append((name, exc.response["Error"]["Code"]))
    assert failed == [("two", "InternalError")]
    assert group_names(moto_server) == {"before", "one", "three"}


def test_nth_none_fails_every_later_call_of_that_action_only(aws_faults: FaultProxy) -> None:
    ec2 = boto3.client("ec2")
    aws_faults.fail("DescribeVpcs", nth=None, code="UnauthorizedOperation", status=403)
    for _ in range(2):
        with pytest.raises(ClientError) as excinfo:
            ec2.describe_vpcs()
        assert error_code(excinfo) == ("UnauthorizedOperation", 403)
    assert ec2.describe_regions()["Regions"]
    assert [r.injected for r in aws_faults.records] == [True, True, False]


def test_fail_call_fails_each_call_in_turn(aws_faults: FaultProxy, moto_server: MotoServer) -> None:
    def workflow() -> list[str]:
        """Three independent steps; returns the error code of each (empty when it succeeded)."""
        ec2 = boto3.client("ec2")
        steps = [lambda: ec2.create_key_pair(KeyName="k"),
                 lambda: ec2.create_security_group(GroupName="g", Description="x"),
                 lambda: ec2.describe_regions()]
        codes = []
        for step in steps:
            try:
                step()
                codes.append("")
            except ClientError as exc:
                codes.append(exc.response["Error"]["Code"])
        return codes

    assert workflow() == ["", "", ""]
    clean_run = aws_faults.calls
    assert clean_run == ["CreateKeyPair", "CreateSecurityGroup", "DescribeRegions"]
    for index in range(len(clean_run)):
        moto_server.reset()
        aws_faults.reset()
        aws_faults.fail_call(index, code="Boom", status=500)
        expected = ["Boom" if i == index else "" for i in range(len(clean_run))]
        assert workflow() == expected
        assert aws_faults.calls == clean_run
        assert [r.injected for r in aws_faults.records] == [i == index for i in range(len(clean_run))]
        keys = direct_ec2(moto_server).describe_key_pairs()["KeyPairs"]
        assert (len(keys) == 0) == (index == 0)
        assert (group_names(moto_server) == set()) == (index == 1)


def test_moto_errors_and_statuses_pass_through_unchanged(aws_faults: FaultProxy) -> None:
    ec2 = boto3.client("ec2")
    with pytest.raises(ClientError) as excinfo:
        ec2.describe_security_groups(GroupIds=["sg-00000000000000000"])
    assert error_code(excinfo) == ("InvalidGroup.NotFound", 400)
    assert [(r.action, r.status, r.injected) for r in aws_faults.records] == [
        ("DescribeSecurityGroups", 400, False)]


def test_s3_bodies_stream_both_ways_and_rest_calls_are_named_by_path(aws_faults: FaultProxy) -> None:
    s3 = boto3.client("s3")
    payload = bytes(range(256)) * 12_000  # ~3 MB, several reads of the proxy's buffer
    s3.create_bucket(Bucket="vmlab-bucket")
    s3.put_object(Bucket="vmlab-bucket", Key="dir/blob", Body=payload)
    assert s3.get_object(Bucket="vmlab-bucket", Key="dir/blob")["Body"].read() == payload
    assert s3.head_object(Bucket="vmlab-bucket", Key="dir/blob")["ContentLength"] == len(payload)
    assert aws_faults.calls == ["PUT /vmlab-bucket", "PUT /vmlab-bucket/dir/blob", "GET /vmlab-bucket/dir/blob",
                                "HEAD /vmlab-bucket/dir/blob"]
    aws_faults.fail("GET /vmlab-bucket/dir/blob", code="SlowDown", status=503)
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket="vmlab-bucket", Key="dir/blob")
    assert error_code(excinfo) == ("SlowDown", 503)
    # A HEAD fault carries no body; the connection must stay usable for the next call.
    aws_faults.fail("HEAD /vmlab-bucket/dir/blob", code="NotFound", status=404)
    with pytest.raises(ClientError) as excinfo:
        s3.head_object(Bucket="vmlab-bucket", Key="dir/blob")
    assert error_code(excinfo) == ("404", 404)
    assert s3.get_object(Bucket="vmlab-bucket", Key="dir/blob")["Body"].read() == payload


def test_chunked_request_body_is_forwarded_whole(aws_faults: FaultProxy) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="vmlab-bucket")
    connection = http.client.HTTPConnection("127.0.0.1", int(aws_faults.endpoint.rsplit(":", 1)[1]), timeout=30)
    try:
        connection.request("PUT", "/vmlab-bucket/chunked", body=iter([b"a" * 10, b"b" * 70_000, b"c"]),
                           encode_chunked=True)
        assert connection.getresponse().status == 200
    finally:
        connection.close()
    assert s3.get_object(Bucket="vmlab-bucket", Key="chunked")["Body"].read() == b"a" * 10 + b"b" * 70_000 + b"c"


def test_delay_holds_the_call_and_wait_for_reports_its_arrival(aws_faults: FaultProxy) -> None:
    ec2 = boto3.client("ec2")
    aws_faults.delay("DescribeInstances", 1.5)
    done = threading.Event()

    def call() -> None:
        ec2.describe_instances()
        done.set()

    started = time.monotonic()
    worker = threading.Thread(target=call)
    worker.start()
    assert aws_faults.wait_for("DescribeInstances", timeout=10)
    assert not done.is_set()  # arrived, still held
    worker.join(timeout=10)
    assert done.is_set()
    assert time.monotonic() - started >= 1.5
    assert not aws_faults.wait_for("DescribeInstances", count=2, timeout=0.2)
    assert not aws_faults.wait_for("RunInstances", timeout=0.2)


def test_delay_of_the_nth_call_holds_only_that_one(aws_faults: FaultProxy) -> None:
    ec2 = boto3.client("ec2")
    ec2.describe_regions()
    aws_faults.delay("DescribeRegions", 1.0, nth=2)
    timings = []
    for _ in range(3):
        started = time.monotonic()
        ec2.describe_regions()
        timings.append(time.monotonic() - started)
    assert timings[0] < 0.5 and timings[1] >= 1.0 and timings[2] < 0.5


def test_subprocess_goes_through_the_proxy_and_sees_its_faults(aws_faults: FaultProxy,
                                                               moto_server: MotoServer) -> None:
    script = ("import boto3\n"
              "ec2 = boto3.client('ec2')\n"
              "ec2.create_security_group(GroupName='from-child', Description='x')\n"
              "ec2.describe_vpcs()\n")
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, child.stderr
    assert aws_faults.calls == ["CreateSecurityGroup", "DescribeVpcs"]
    assert group_names(moto_server) == {"from-child"}

    moto_server.reset()
    aws_faults.reset()
    aws_faults.fail("DescribeVpcs", code="InvalidClientTokenId", status=401)
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert child.returncode != 0
    assert "InvalidClientTokenId" in child.stderr
    assert aws_faults.calls == ["CreateSecurityGroup", "DescribeVpcs"]


def test_sigint_during_a_held_call_interrupts_the_subprocess(aws_faults: FaultProxy) -> None:
    aws_faults.delay("DescribeImages", 60)
    script = "import boto3\nboto3.client('ec2').describe_images(Owners=['self'])\nprint('finished')\n"
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        assert aws_faults.wait_for("DescribeImages", timeout=30)
        time.sleep(1)
        assert child.poll() is None  # held by the proxy, as a vmlab wait would be
        started = time.monotonic()
        child.send_signal(signal.SIGINT)
        stdout, stderr = child.communicate(timeout=20)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert time.monotonic() - started < 20
    assert child.returncode != 0
    assert "KeyboardInterrupt" in stderr
    assert "finished" not in stdout


def test_stop_cuts_delays_short(moto_server: MotoServer) -> None:
    proxy = FaultProxy(moto_server.endpoint).start()
    ec2 = boto3.client("ec2", endpoint_url=proxy.endpoint)
    proxy.delay("DescribeRegions", 60)
    answers: list[int] = []
    worker = threading.Thread(target=lambda: answers.append(len(ec2.describe_regions()["Regions"])))
    worker.start()
    assert proxy.wait_for("DescribeRegions", timeout=10)
    time.sleep(0.5)
    assert worker.is_alive() and not answers
    started = time.monotonic()
    proxy.stop()
    worker.join(timeout=10)
    assert time.monotonic() - started < 10
    # The held call is still answered (forwarded to moto) rather than left hanging.
    assert answers and answers[0] > 0
