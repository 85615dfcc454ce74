"""FaultCloud against the session moto server: pass-through, call log, injected faults."""

from __future__ import annotations

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.support.faultcloud import FaultCloud


def client(endpoint: str, service: str):
    return boto3.client(service, region_name="us-east-1", endpoint_url=endpoint, aws_access_key_id="testing",
                        aws_secret_access_key="testing",
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))


@pytest.fixture
def cloud(moto_server):
    moto_server.reset()
    with FaultCloud(moto_server.endpoint_url) as fc:
        yield fc


@pytest.fixture
def via(cloud):
    """Clients through the FaultCloud."""
    return lambda service: client(cloud.endpoint_url, service)


@pytest.fixture
def direct(moto_server):
    """Clients straight to moto."""
    return lambda service: client(moto_server.endpoint_url, service)


def group_names(ec2) -> set[str]:
    return {g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]}


def test_pass_through_and_log(cloud, via, direct):
    s3, ec2 = via("s3"), via("ec2")
    s3.create_bucket(Bucket="fc-a")
    s3.put_bucket_tagging(Bucket="fc-a", Tagging={"TagSet": [{"Key": "k", "Value": "v"}]})
    s3.put_object(Bucket="fc-a", Key="dir/obj.txt", Body=b"hello")
    assert s3.get_object(Bucket="fc-a", Key="dir/obj.txt")["Body"].read() == b"hello"
    assert s3.head_object(Bucket="fc-a", Key="dir/obj.txt")["ContentLength"] == 5
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["fc-a"]
    assert s3.get_bucket_tagging(Bucket="fc-a")["TagSet"] == [{"Key": "k", "Value": "v"}]
    s3.head_bucket(Bucket="fc-a")
    with pytest.raises(ClientError) as exc:  # a real moto error is relayed unchanged
        s3.head_bucket(Bucket="fc-missing")
    assert exc.value.response["Error"]["Code"] == "404"
    sg = ec2.create_security_group(GroupName="fc-sg", Description="d")["GroupId"]
    assert direct("ec2").describe_security_groups(GroupIds=[sg])["SecurityGroups"][0]["GroupName"] == "fc-sg"
    via("iam").create_role(RoleName="fc-role", AssumeRolePolicyDocument="{}")
    assert via("sts").get_caller_identity()["Account"]
    assert cloud.calls == ["PUT bucket", "PUT bucket?tagging", "PUT object", "GET object", "HEAD object", "GET /",
                           "GET bucket?tagging", "HEAD bucket", "HEAD bucket", "CreateSecurityGroup",
                           "CreateRole", "GetCallerIdentity"]
    assert cloud.mutating_calls() == ["PUT bucket", "PUT bucket?tagging", "PUT object", "CreateSecurityGroup",
                                      "CreateRole"]
    s3.delete_object(Bucket="fc-a", Key="dir/obj.txt")
    s3.delete_bucket(Bucket="fc-a")
    assert cloud.mutating_calls()[-2:] == ["DELETE object", "DELETE bucket"]
    assert direct("s3").list_buckets()["Buckets"] == []


def test_fail_nth_mutating_call_is_not_forwarded(cloud, via, direct):
    ec2 = via("ec2")
    cloud.fail(2)
    ec2.create_security_group(GroupName="fc-1", Description="d")
    ec2.describe_security_groups()  # reads do not count
    with pytest.raises(ClientError) as exc:
        ec2.create_security_group(GroupName="fc-2", Description="d")
    assert exc.value.response["Error"] == {"Code": "InjectedFault", "Message": "injected fault"}
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    ec2.create_security_group(GroupName="fc-3", Description="d")
    assert group_names(direct("ec2")) == {"default", "fc-1", "fc-3"}
    assert cloud.mutating_calls() == ["CreateSecurityGroup"] * 3
    assert cloud.calls.count("DescribeSecurityGroups") == 1 and cloud.injected == ["CreateSecurityGroup"]


def test_fail_counts_all_calls_and_uses_protocol_formats(cloud, via, direct):
    s3, iam = via("s3"), via("iam")
    cloud.fail(1, mutating_only=False, code="Throttled", message="slow down")
    with pytest.raises(ClientError) as exc:  # a read, counted because mutating_only=False
        s3.list_buckets()
    assert exc.value.response["Error"]["Code"] == "Throttled"
    cloud.fail(1, status=409, code="Boom", message="bucket boom")
    with pytest.raises(ClientError) as exc:
        s3.create_bucket(Bucket="fc-b")
    assert exc.value.response["Error"] == {"Code": "Boom", "Message": "bucket boom"}
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409
    assert direct("s3").list_buckets()["Buckets"] == []
    cloud.fail(1)
    with pytest.raises(ClientError) as exc:  # IAM: <ErrorResponse> format
        iam.create_role(RoleName="fc-role", AssumeRolePolicyDocument="{}")
    assert exc.value.response["Error"]["Code"] == "InjectedFault"
    assert exc.value.response["Error"]["Type"] == "Sender"
    assert direct("iam").list_roles()["Roles"] == []
    cloud.fail(1)
    logs = via("logs")  # a JSON-protocol service
    with pytest.raises(ClientError) as exc:
        logs.create_log_group(logGroupName="fc-lg")
    assert exc.value.response["Error"] == {"Code": "InjectedFault", "Message": "injected fault"}
    assert cloud.calls[-1] == "CreateLogGroup"
    cloud.fail(5)
    cloud.clear()
    s3.create_bucket(Bucket="fc-c")  # no rule left
    assert cloud.injected == ["GET /", "PUT bucket", "CreateRole", "CreateLogGroup"]


def test_fail_after_forward_takes_effect(cloud, via, direct):
    s3, ec2 = via("s3"), via("ec2")
    cloud.fail_after_forward(1)
    with pytest.raises(ClientError) as exc:
        s3.create_bucket(Bucket="fc-lost")
    assert exc.value.response["Error"]["Code"] == "InjectedFault"
    assert [b["Name"] for b in direct("s3").list_buckets()["Buckets"]] == ["fc-lost"]
    cloud.fail_after_forward(1)
    with pytest.raises(ClientError) as exc:
        ec2.create_security_group(GroupName="fc-lost-sg", Description="d")
    assert exc.value.response["Error"]["Code"] == "InjectedFault"
    assert "fc-lost-sg" in group_names(direct("ec2"))
    assert cloud.mutating_calls() == ["PUT bucket", "CreateSecurityGroup"]
