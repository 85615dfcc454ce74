"""The sandbox cloud kept across restarts (proxy.embedded.moto_state through MotoServer(state_file=...)):
what was created comes back with the same ids; a file that cannot be restored stops the start."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from proxy.embedded.moto import MotoServer, MotoStateError
from proxy.embedded.moto_state import STATE_FORMAT

pytest.importorskip("moto")
pytestmark = pytest.mark.timeout(120)


def clients(server: MotoServer):
    """(s3, ec2) boto3 clients for ``server`` in us-east-1."""
    import boto3

    kw = dict(region_name="us-east-1", endpoint_url=server.endpoint_url, aws_access_key_id="testing",
              aws_secret_access_key="testing")
    return boto3.client("s3", **kw), boto3.client("ec2", **kw)


def test_resources_and_ids_survive_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "moto-state.pickle"
    with MotoServer(state_file=state) as first:
        s3, ec2 = clients(first)
        s3.create_bucket(Bucket="kept-bucket")
        s3.put_object(Bucket="kept-bucket", Key="hello.txt", Body=b"hello")
        group = ec2.create_security_group(GroupName="kept", Description="kept across restarts")["GroupId"]
    assert state.stat().st_mode & 0o077 == 0

    with MotoServer(state_file=state) as second:
        s3, ec2 = clients(second)
        assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["kept-bucket"]
        assert s3.get_object(Bucket="kept-bucket", Key="hello.txt")["Body"].read() == b"hello"
        groups = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["kept"]}])["SecurityGroups"]
        assert [g["GroupId"] for g in groups] == [group]
        s3.delete_object(Bucket="kept-bucket", Key="hello.txt")
        s3.delete_bucket(Bucket="kept-bucket")

    with MotoServer(state_file=state) as third:  # deletions are kept too
        s3, _ = clients(third)
        assert s3.list_buckets()["Buckets"] == []


def test_unreadable_state_stops_the_start(tmp_path: Path) -> None:
    state = tmp_path / "moto-state.pickle"
    state.write_bytes(b"not a pickle")
    with pytest.raises(MotoStateError, match=f"cannot restore the sandbox cloud from {state}: not a saved"):
        MotoServer(state_file=state).start()
    assert state.read_bytes() == b"not a pickle"  # left as it was, for the user to decide


def test_state_of_another_moto_version_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "moto-state.pickle"
    state.write_bytes(pickle.dumps({"format": STATE_FORMAT, "moto": "0.0.1", "random": None, "backends": {}}))
    with pytest.raises(MotoStateError, match="saved by moto 0.0.1, this is moto 5"):
        MotoServer(state_file=state).start()


def test_a_service_that_cannot_be_saved_leaves_the_others_saved(tmp_path: Path) -> None:
    """After the reads an install of every module makes, one of moto's services holds a lock in
    its state, which pickle refuses: a newcomer's dev stack then stopped saving anything (objects
    uploaded after it were gone at the next start). Now only that service is left out."""
    import boto3
    from botocore.exceptions import ClientError

    state = tmp_path / "moto-state.pickle"
    with MotoServer(state_file=state) as first:
        s3, _ = clients(first)
        s3.create_bucket(Bucket="before-500")
        kw = dict(region_name="us-east-1", endpoint_url=first.endpoint_url, aws_access_key_id="testing",
                  aws_secret_access_key="testing")
        # the reads iasql_install of every module makes (two of them answer HTTP 500 in moto)
        for service, operation in (("codebuild", "list_source_credentials"), ("codebuild", "list_projects"),
                                   ("rds", "describe_db_instances"), ("memorydb", "describe_clusters"),
                                   ("apigatewayv2", "get_apis"), ("lambda", "list_functions"),
                                   ("ecr", "describe_repositories"), ("ecr-public", "describe_repositories"),
                                   ("dynamodb", "list_tables"), ("secretsmanager", "list_secrets"),
                                   ("acm", "list_certificates"), ("route53", "list_hosted_zones"),
                                   ("elbv2", "describe_load_balancers"), ("sqs", "list_queues"),
                                   ("sns", "list_topics"), ("logs", "describe_log_groups"),
                                   ("iam", "list_users"), ("ec2", "describe_instances")):
            try:
                getattr(boto3.client(service, **kw), operation)()
            except ClientError:
                pass
        s3.create_bucket(Bucket="after-500")
        s3.put_object(Bucket="after-500", Key="k.txt", Body=b"kept")
    with MotoServer(state_file=state) as second:
        s3, _ = clients(second)
        assert sorted(b["Name"] for b in s3.list_buckets()["Buckets"]) == ["after-500", "before-500"]
        assert s3.get_object(Bucket="after-500", Key="k.txt")["Body"].read() == b"kept"


def test_a_state_file_of_the_previous_format_is_still_restored(tmp_path: Path) -> None:
    """Format 1 (every service in one pickle) was written by dev stacks before format 2: an
    upgrade must not stop `make run` with "unknown format"."""
    import moto
    from moto.moto_api._internal import mock_random

    state = tmp_path / "moto-state.pickle"
    state.write_bytes(pickle.dumps({"format": 1, "moto": moto.__version__, "random": mock_random.getstate(),
                                    "backends": {}}))
    with MotoServer(state_file=state) as server:
        s3, _ = clients(server)
        assert s3.list_buckets()["Buckets"] == []
