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


def test_a_service_that_cannot_be_saved_leaves_the_others_saved(tmp_path: Path, capfd) -> None:
    """After the reads an install of every module makes, moto's ECR backend holds a lock and its
    Lambda backend a weak dictionary, which plain pickle refuses: a newcomer's dev stack then
    stopped saving anything (objects uploaded after it were gone at the next start). A service
    that cannot be saved is now left out alone, and since StatePickler writes both, none is."""
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
    assert "not saved" not in capfd.readouterr().err


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


def _client(server: MotoServer, service: str):
    """A boto3 client for ``service`` on ``server`` in us-east-1."""
    import boto3

    return boto3.client(service, region_name="us-east-1", endpoint_url=server.endpoint_url,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def _zip_of_handler() -> bytes:
    """A Lambda deployment package: index.py with a handler."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("index.py", "def handler(event, context):\n    return event\n")
    return buf.getvalue()


def test_queues_repositories_certificates_and_functions_survive_a_restart(tmp_path: Path, capfd) -> None:
    """moto 5.2.5 keeps a lock in every SQS queue and ECR backend, cryptography objects in an ACM
    certificate, and a WeakValueDictionary and a local lambda in Lambda's storage: pickle refused
    all four, the services were silently left out of the state file, and after a restart the next
    IaSQL sync deleted the user's `queue` (and repository, certificate, function) rows. SSM's
    parameters, in a defaultdict subclass whose __init__ takes an account and a region, were saved
    but could not be loaded ("service moto.ssm.models.ssm_backends not restored (TypeError...)")."""
    import json

    state = tmp_path / "moto-state.pickle"
    with MotoServer(state_file=state) as first:
        sqs = _client(first, "sqs")
        url = sqs.create_queue(QueueName="kept-queue", Attributes={"VisibilityTimeout": "45",
                                                                   "DelaySeconds": "0"})["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="still here")
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"DelaySeconds": "3"})
        repo = _client(first, "ecr").create_repository(repositoryName="kept-repo")["repository"]["repositoryArn"]
        cert = _client(first, "acm").request_certificate(DomainName="kept.example.com")["CertificateArn"]
        trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                         "Principal": {"Service": "lambda.amazonaws.com"}}]}
        role = _client(first, "iam").create_role(RoleName="kept-role",
                                                 AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
        fn = _client(first, "lambda").create_function(
            FunctionName="kept-function", Runtime="python3.11", Role=role, Handler="index.handler",
            Code={"ZipFile": _zip_of_handler()})["FunctionArn"]
        ssm = _client(first, "ssm")
        ssm.put_parameter(Name="/kept/param", Value="kept-value", Type="String", Description="kept")
        ssm.put_parameter(Name="/kept/param", Value="kept-value-2", Type="String", Overwrite=True)

    with MotoServer(state_file=state) as second:
        sqs = _client(second, "sqs")
        assert [u.rsplit("/", 1)[1] for u in sqs.list_queues()["QueueUrls"]] == ["kept-queue"]
        url = sqs.get_queue_url(QueueName="kept-queue")["QueueUrl"]  # moto's port is new at every start
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert (attrs["VisibilityTimeout"], attrs["DelaySeconds"]) == ("45", "3")
        got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5)["Messages"]
        assert [m["Body"] for m in got] == ["still here"]  # the restored lock works: not held, not shared
        sqs.send_message(QueueUrl=url, MessageBody="new")
        repos = _client(second, "ecr").describe_repositories()["repositories"]
        assert [r["repositoryArn"] for r in repos] == [repo]
        acm = _client(second, "acm")
        assert [c["CertificateArn"] for c in acm.list_certificates()["CertificateSummaryList"]] == [cert]
        assert acm.describe_certificate(CertificateArn=cert)["Certificate"]["DomainName"] == "kept.example.com"
        lam = _client(second, "lambda")
        assert lam.get_function(FunctionName=fn)["Configuration"]["FunctionName"] == "kept-function"
        lam.create_alias(FunctionName="kept-function", Name="live", FunctionVersion="$LATEST")
        ssm = _client(second, "ssm")
        param = ssm.get_parameter(Name="/kept/param")["Parameter"]
        assert (param["Value"], param["Version"]) == ("kept-value-2", 2)
        assert [h["Value"] for h in ssm.get_parameter_history(Name="/kept/param")["Parameters"]] == \
            ["kept-value", "kept-value-2"]
        ssm.put_parameter(Name="/kept/new", Value="new", Type="String")  # the restored dict still works
        assert ssm.get_parameters_by_path(Path="/aws/service/global-infrastructure/regions")["Parameters"]
    err = capfd.readouterr().err
    assert "not saved" not in err and "not restored" not in err, err


_SITECUSTOMIZE = '''
import moto.sqs.models

def _refuse(self, protocol):
    raise TypeError("this test's queue cannot be pickled")

moto.sqs.models.Queue.__reduce_ex__ = _refuse
'''


def test_a_service_that_cannot_be_saved_is_named_on_the_stack_output(tmp_path: Path, monkeypatch, capfd) -> None:
    """A service left out of the state file used to be named only in moto's log (a temporary file
    read only when moto fails to start): the user learnt of it when the resources were gone. The
    warning now reaches the stderr of the process that started the server (``make run``'s)."""
    import os

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_SITECUSTOMIZE)  # the server's python makes queues unpicklable
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(hook), path])))
    state = tmp_path / "moto-state.pickle"
    with MotoServer(state_file=state) as server:
        _client(server, "sqs").create_queue(QueueName="lost-queue")
        _client(server, "sns").create_topic(Name="kept-topic")
    err = capfd.readouterr().err
    assert "sandbox cloud: the sqs service is not saved" in err
    assert "this test's queue cannot be pickled" in err
    assert err.count("sqs service is not saved") == 1  # once, not at every snapshot
    if path is None:
        monkeypatch.delenv("PYTHONPATH")
    else:
        monkeypatch.setenv("PYTHONPATH", path)
    with MotoServer(state_file=state) as second:  # the others still are
        assert len(_client(second, "sns").list_topics()["Topics"]) == 1
        assert _client(second, "sqs").list_queues().get("QueueUrls", []) == []
