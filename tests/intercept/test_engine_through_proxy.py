"""The engine issue's "Done when", through psql and the proxy on the sandbox cloud (moto over HTTP):
install aws_s3 and aws_iam, begin, insert a bucket and a role, commit, both exist in the cloud;
delete the bucket row, commit, and it is gone from the cloud; all with IaSQL's result columns."""

from __future__ import annotations

import json

import boto3

from tests.intercept.conftest import psql

ROLE_POLICY = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {
    "Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]})


def _client(moto_server, service: str):
    return boto3.client(service, endpoint_url=moto_server.endpoint_url, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def _csv_rows(out: str) -> list[list[str]]:
    return [line.split("|") for line in out.splitlines() if line]


def test_bucket_and_role_created_then_bucket_deleted(iasql_proxy, fresh_db, moto_server):
    s3, iam = _client(moto_server, "s3"), _client(moto_server, "iam")
    bucket, role = f"e2e-{fresh_db[-8:]}", f"e2e-role-{fresh_db[-8:]}"

    res = psql(iasql_proxy.port, fresh_db, "SELECT * FROM iasql_install('aws_s3', 'aws_iam')", "-A", "-F|")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "module_name|created_table_name|record_count"
    installed = {tuple(r[:2]) for r in _csv_rows("\n".join(lines[1:-1]))}
    assert ("aws_s3@0.1.0", "bucket") in installed and ("aws_iam@0.1.0", "iam_role") in installed

    sql = ("SELECT * FROM iasql_begin(); "
           f"INSERT INTO bucket (name) VALUES ('{bucket}'); "
           f"INSERT INTO iam_role (role_name, assume_role_policy_document) VALUES ('{role}', '{ROLE_POLICY}'); "
           "SELECT * FROM iasql_commit();")
    res = psql(iasql_proxy.port, fresh_db, sql, "-A", "-F|")
    assert res.returncode == 0, res.stderr
    assert "action|table_name|id|description" in res.stdout
    assert f"create|bucket|{bucket}|" in res.stdout
    assert f"create|iam_role|{role}|" in res.stdout
    assert bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert iam.get_role(RoleName=role)["Role"]["RoleName"] == role

    sql = f"SELECT * FROM iasql_begin(); DELETE FROM bucket WHERE name = '{bucket}'; SELECT * FROM iasql_commit();"
    res = psql(iasql_proxy.port, fresh_db, sql, "-A", "-F|")
    assert res.returncode == 0, res.stderr
    assert f"delete|bucket|{bucket}|" in res.stdout
    assert bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert iam.get_role(RoleName=role)["Role"]["RoleName"] == role  # untouched

    res = psql(iasql_proxy.port, fresh_db, "SELECT name FROM bucket; SELECT role_name FROM iam_role", "-A", "-t")
    assert res.returncode == 0, res.stderr
    assert bucket not in res.stdout and role in res.stdout


def test_vpc_and_subnet_through_psql(iasql_proxy, fresh_db, moto_server):
    """aws_vpc through psql and the proxy: install imports the default VPC, a VPC and its subnet
    are previewed, committed (both exist in moto), then deleted."""
    ec2 = _client(moto_server, "ec2")
    cidr = "10.77.0.0/16"
    res = psql(iasql_proxy.port, fresh_db, "SELECT * FROM iasql_install('aws_vpc')", "-A", "-F|")
    assert res.returncode == 0, res.stderr
    assert "aws_vpc@0.1.0|vpc|" in res.stdout and "aws_vpc@0.1.0|subnet|" in res.stdout
    res = psql(iasql_proxy.port, fresh_db, "SELECT vpc_id FROM vpc WHERE is_default", "-A", "-t")
    [default] = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    assert res.stdout.split() == [default["VpcId"]]

    sql = ("SELECT * FROM iasql_begin(); "
           f"INSERT INTO vpc (cidr_block) VALUES ('{cidr}'); "
           "INSERT INTO subnet (cidr_block, availability_zone, vpc_id) "
           f"SELECT '10.77.1.0/24', 'us-east-1c', id FROM vpc WHERE cidr_block = '{cidr}'; "
           "SELECT * FROM iasql_preview();")
    res = psql(iasql_proxy.port, fresh_db, sql, "-A", "-F|")
    assert res.returncode == 0, res.stderr
    assert "action|table_name|id|description" in res.stdout
    assert "create|vpc|" in res.stdout and f"|VPC {cidr} (new) in us-east-1" in res.stdout
    assert "create|subnet|" in res.stdout
    res = psql(iasql_proxy.port, fresh_db, "SELECT * FROM iasql_commit()", "-A", "-F|")
    assert res.returncode == 0, res.stderr
    [vpc] = ec2.describe_vpcs(Filters=[{"Name": "cidr-block", "Values": [cidr]}])["Vpcs"]
    [subnet] = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["Subnets"]
    # a created row's id is its primary key (it had no cloud id when planned)
    assert f"|VPC {cidr} (new) in us-east-1" in res.stdout and "|subnet 10.77.1.0/24 (new) in us-east-1c" in res.stdout
    res = psql(iasql_proxy.port, fresh_db, f"SELECT v.vpc_id, s.subnet_id FROM vpc v JOIN subnet s ON s.vpc_id = v.id "
                                           f"WHERE v.cidr_block = '{cidr}'", "-A", "-t", "-F|")
    assert res.stdout.split() == [f"{vpc['VpcId']}|{subnet['SubnetId']}"]
    assert subnet["AvailabilityZone"] == "us-east-1c"

    sql = ("SELECT * FROM iasql_begin(); "
           f"DELETE FROM subnet WHERE subnet_id = '{subnet['SubnetId']}'; "
           f"DELETE FROM vpc WHERE vpc_id = '{vpc['VpcId']}'; SELECT * FROM iasql_commit();")
    res = psql(iasql_proxy.port, fresh_db, sql, "-A", "-F|")
    assert res.returncode == 0, res.stderr
    assert f"delete|vpc|{vpc['VpcId']}|" in res.stdout
    assert ec2.describe_vpcs(Filters=[{"Name": "cidr-block", "Values": [cidr]}])["Vpcs"] == []


def test_ec2_instance_through_psql(iasql_proxy, fresh_db, moto_server):
    """aws_ec2 through psql and the proxy: an instance is previewed, committed (it runs in moto),
    re-tagged in place and terminated; aws_ec2_metadata shows its facts."""
    ec2 = _client(moto_server, "ec2")
    name = f"e2e-{fresh_db[-8:]}"
    ami = min(i["ImageId"] for i in ec2.describe_images(Owners=["amazon"])["Images"])
    res = psql(iasql_proxy.port, fresh_db, "SELECT * FROM iasql_install('aws_ec2', 'aws_ec2_metadata')", "-A", "-F|")
    assert res.returncode == 0, res.stderr
    assert "aws_ec2@0.1.0|instance|" in res.stdout and "aws_ec2_metadata@0.1.0|instance_metadata|" in res.stdout

    sql = ("SELECT * FROM iasql_begin(); "
           f"""INSERT INTO instance (ami, instance_type, tags) VALUES ('{ami}', 't2.micro', '{{"Name": "{name}"}}'); """
           "SELECT * FROM iasql_preview();")
    res = psql(iasql_proxy.port, fresh_db, sql, "-A", "-F|")
    assert res.returncode == 0, res.stderr
    assert "action|table_name|id|description" in res.stdout
    assert f"|t2.micro instance new ({ami}, running) in us-east-1" in res.stdout
    res = psql(iasql_proxy.port, fresh_db, "SELECT * FROM iasql_commit()", "-A", "-F|")
    assert res.returncode == 0, res.stderr
    assert "create|instance|" in res.stdout
    tagged = [{"Name": "tag:Name", "Values": [name]}, {"Name": "instance-state-name", "Values": ["running"]}]
    [[inst]] = [r["Instances"] for r in ec2.describe_instances(Filters=tagged)["Reservations"]]
    res = psql(iasql_proxy.port, fresh_db, f"SELECT i.instance_id, m.private_ip_address FROM instance i JOIN "
                                           f"instance_metadata m ON m.id = i.id WHERE i.tags->>'Name' = '{name}'",
               "-A", "-t", "-F|")
    assert res.stdout.split() == [f"{inst['InstanceId']}|{inst['PrivateIpAddress']}/32"]

    sql = ("SELECT * FROM iasql_begin(); "
           f"""UPDATE instance SET tags = '{{"Name": "{name}", "env": "e2e"}}' WHERE instance_id = '{inst["InstanceId"]}'; """
           "SELECT * FROM iasql_commit();")
    res = psql(iasql_proxy.port, fresh_db, sql, "-A", "-F|")
    assert res.returncode == 0, res.stderr
    assert f"update|instance|{inst['InstanceId']}|" in res.stdout
    [[live]] = [r["Instances"] for r in ec2.describe_instances(InstanceIds=[inst["InstanceId"]])["Reservations"]]
    assert {"Key": "env", "Value": "e2e"} in live["Tags"]

    sql = (f"SELECT * FROM iasql_begin(); DELETE FROM instance WHERE instance_id = '{inst['InstanceId']}'; "
           "SELECT * FROM iasql_commit();")
    res = psql(iasql_proxy.port, fresh_db, sql, "-A", "-F|")
    assert res.returncode == 0, res.stderr
    assert f"delete|instance|{inst['InstanceId']}|" in res.stdout
    [[gone]] = [r["Instances"] for r in ec2.describe_instances(InstanceIds=[inst["InstanceId"]])["Reservations"]]
    assert gone["State"]["Name"] == "terminated"
