"""Modules aws_ec2 and aws_ec2_metadata through the engine against a real moto server, checked with
boto3 and the tables."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from engine.rpc import EngineError
from tests.engine.support import call, sql


@pytest.fixture
async def ec2_mod(registry, ctx, dsn):
    """aws_ec2 (with its dependencies) and aws_ec2_metadata installed, credentials set."""
    await call(registry, ctx, "iasql_install", "aws_ec2", "aws_ec2_metadata")
    await sql(dsn, "INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES ('testing', 'testing')")


def ami_of(aws, region="us-east-1") -> str:
    """An image moto knows in ``region``."""
    return min(i["ImageId"] for i in aws("ec2", region).describe_images(Owners=["amazon"])["Images"])


def instance(aws, iid, region="us-east-1") -> dict | None:
    """The describe record of ``iid`` (None when terminated)."""
    [res] = aws("ec2", region).describe_instances(InstanceIds=[iid])["Reservations"]
    i = res["Instances"][0]
    return None if i["State"]["Name"] == "terminated" else i


def public_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def applied(rows):
    """(action, table) of a commit's cloud actions (not the sync's)."""
    return [(a, t) for a, t, _, d in rows if not d.startswith("synced")]


async def test_install_and_rollback_import_instances_made_in_the_cloud(registry, ctx, dsn, aws):
    ec2 = aws("ec2")
    ami = ami_of(aws)
    sg = ec2.create_security_group(GroupName="web", Description="web")["GroupId"]
    ec2.import_key_pair(KeyName="ops", PublicKeyMaterial=public_key().encode())
    [made] = ec2.run_instances(ImageId=ami, InstanceType="t2.micro", MinCount=1, MaxCount=1, KeyName="ops",
                               SecurityGroupIds=[sg], UserData="#!/bin/sh\necho hi",
                               TagSpecifications=[{"ResourceType": "instance",
                                                   "Tags": [{"Key": "Name", "Value": "made"}]}])["Instances"]
    rows = await call(registry, ctx, "iasql_install", "aws_ec2", "aws_ec2_metadata")
    assert {t: n for _, t, n in rows} == {"key_pair": 1, "instance": 1, "instance_security_groups": 1,
                                          "instance_metadata": 1, "registered_instance": 0,
                                          "general_purpose_volume": 1, "instance_block_device_mapping": 1}
    got = await sql(dsn, "SELECT i.instance_id, i.ami, i.instance_type, i.key_pair_name, i.state::text, i.user_data, "
                         "i.tags::text, i.hibernation_enabled, i.region, i.role_name, s.subnet_id, g.group_id "
                         "FROM instance i JOIN subnet s ON s.id = i.subnet_id "
                         "JOIN instance_security_groups j ON j.instance_id = i.id "
                         "JOIN security_group g ON g.id = j.security_group_id")
    assert got == [(made["InstanceId"], ami, "t2.micro", "ops", "running", "#!/bin/sh\necho hi", '{"Name": "made"}',
                    False, "us-east-1", None, made["SubnetId"], sg)]
    [kp] = ec2.describe_key_pairs()["KeyPairs"]
    assert await sql(dsn, "SELECT name, key_pair_id, type::text, fingerprint, region FROM key_pair") == [
        ("ops", kp["KeyPairId"], "rsa", kp["KeyFingerprint"], "us-east-1")]
    live = instance(aws, made["InstanceId"])
    [meta] = await sql(dsn, "SELECT m.id = i.id, m.architecture::text, host(m.private_ip_address), "
                            "host(m.public_ip_address), m.launch_time = %s, m.cpu_cores, m.mem_size_mb, "
                            "m.ebs_optimized, m.root_device_type::text, m.root_device_name FROM instance_metadata m "
                            "JOIN instance i ON i.instance_id = m.instance_id", (live["LaunchTime"],))
    assert meta == (True, live["Architecture"], live["PrivateIpAddress"], live["PublicIpAddress"], True, 1, 1024, False, "ebs",
                    live["RootDeviceName"])

    # made in the cloud later: iasql_rollback pulls them in, with their groups and metadata
    more = ec2.run_instances(ImageId=ami, InstanceType="t3.nano", MinCount=3, MaxCount=3,
                             SecurityGroupIds=[sg])["Instances"]
    await call(registry, ctx, "iasql_begin")
    rows = await call(registry, ctx, "iasql_rollback")
    # (the subnet's available_ip_address_count changed too)
    # (with their root volumes and the mappings of those)
    assert sorted((a, t) for a, t, _, _ in rows if t != "subnet") == [("create", "general_purpose_volume")] * 3 + \
        [("create", "instance")] * 3 + [("create", "instance_block_device_mapping")] * 3 + \
        [("create", "instance_metadata")] * 3 + [("create", "instance_security_groups")] * 3
    assert await sql(dsn, "SELECT instance_id FROM instance WHERE instance_type = 't3.nano' ORDER BY 1") == \
        sorted((i["InstanceId"],) for i in more)
    assert await sql(dsn, "SELECT count(*) FROM instance_security_groups") == [(4,)]
    assert await sql(dsn, "SELECT count(*), min(mem_size_mb) FROM instance_metadata") == [(4, 512)]


async def test_one_commit_creates_network_group_and_instance_in_dependency_order(registry, ctx, dsn, aws, ec2_mod):
    ami = ami_of(aws)
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO vpc (cidr_block) VALUES ('10.20.0.0/16')")
    await sql(dsn, "INSERT INTO subnet (cidr_block, availability_zone, vpc_id) "
                   "SELECT '10.20.1.0/24', 'us-east-1b', id FROM vpc WHERE cidr_block = '10.20.0.0/16'")
    await sql(dsn, "INSERT INTO security_group (group_name, description, vpc_id) "
                   "SELECT 'app', 'app servers', id FROM vpc WHERE cidr_block = '10.20.0.0/16'")
    await sql(dsn, """INSERT INTO instance (ami, instance_type, user_data, tags, subnet_id)
                      SELECT %s, 't2.micro', 'boot', '{"Name": "app-1"}', id FROM subnet WHERE cidr_block = '10.20.1.0/24'""",
              (ami,))
    await sql(dsn, "INSERT INTO instance_security_groups (instance_id, security_group_id) "
                   "SELECT i.id, g.id FROM instance i, security_group g WHERE g.group_name = 'app'")
    [(inst_pk,)] = await sql(dsn, "SELECT id FROM instance")
    preview = await call(registry, ctx, "iasql_preview")
    assert sorted((a, t) for a, t, _, _ in preview) == [
        ("create", "instance"), ("create", "instance_security_groups"), ("create", "security_group"),
        ("create", "subnet"), ("create", "vpc")]
    assert ("create", "instance", str(inst_pk), f"t2.micro instance new ({ami}, running) in us-east-1") in preview
    [isg] = [r for r in preview if r[1] == "instance_security_groups"]
    assert isg[2] == f"{inst_pk}|{isg[2].split('|')[1]}" and isg[3].endswith(f"of instance #{inst_pk}")
    assert aws("ec2").describe_instances()["Reservations"] == []  # preview changes nothing

    rows = await call(registry, ctx, "iasql_commit")
    # the instance waited for its subnet and its group, made in the same commit
    assert [t for _, t in applied(rows)] == ["vpc", "subnet", "security_group", "instance",
                                              "instance_security_groups"]
    [(iid, subnet_id, group_id)] = await sql(
        dsn, "SELECT i.instance_id, s.subnet_id, g.group_id FROM instance i JOIN subnet s ON s.id = i.subnet_id "
             "JOIN instance_security_groups j ON j.instance_id = i.id JOIN security_group g ON g.id = j.security_group_id")
    live = instance(aws, iid)
    assert live["SubnetId"] == subnet_id and [g["GroupId"] for g in live["SecurityGroups"]] == [group_id]
    assert live["Tags"] == [{"Key": "Name", "Value": "app-1"}]
    attr = aws("ec2").describe_instance_attribute(InstanceId=iid, Attribute="userData")
    assert attr["UserData"]["Value"] == "Ym9vdA=="  # base64 of 'boot'
    assert await sql(dsn, "SELECT count(*) FROM instance_metadata WHERE instance_id = %s", (iid,)) == [(1,)]


async def test_update_in_place_replace_and_delete(registry, ctx, dsn, aws, ec2_mod):
    ec2 = aws("ec2")
    ami = ami_of(aws)
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, """INSERT INTO instance (ami, instance_type, tags) VALUES (%s, 't2.micro', '{"Name": "a"}')""", (ami,))
    rows = await call(registry, ctx, "iasql_commit")
    assert applied(rows) == [("create", "instance")]
    [(iid, subnet_pk)] = await sql(dsn, "SELECT instance_id, subnet_id FROM instance")
    assert subnet_pk is not None  # AWS's choice of subnet, written back by the sync

    # tags and state change in place: the same instance
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, """UPDATE instance SET tags = '{"Name": "a", "env": "dev"}', state = 'stopped'""")
    rows = await call(registry, ctx, "iasql_commit")
    assert applied(rows) == [("update", "instance")]
    live = instance(aws, iid)
    assert live["State"]["Name"] == "stopped"
    assert sorted((t["Key"], t["Value"]) for t in live["Tags"]) == [("Name", "a"), ("env", "dev")]
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE instance SET state = 'running'")
    await call(registry, ctx, "iasql_commit")
    assert instance(aws, iid)["State"]["Name"] == "running"

    # a security group added and removed in place
    sg = ec2.create_security_group(GroupName="extra", Description="extra")["GroupId"]
    await call(registry, ctx, "iasql_begin")
    await call(registry, ctx, "iasql_rollback")  # brings the new group in
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO instance_security_groups (instance_id, security_group_id) "
                   "SELECT i.id, g.id FROM instance i, security_group g WHERE g.group_id = %s", (sg,))
    rows = await call(registry, ctx, "iasql_commit")
    assert applied(rows) == [("create", "instance_security_groups")]
    assert sg in [g["GroupId"] for g in instance(aws, iid)["SecurityGroups"]]
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "DELETE FROM instance_security_groups WHERE security_group_id = (SELECT id FROM security_group "
                   "WHERE group_id = %s)", (sg,))
    rows = await call(registry, ctx, "iasql_commit")
    assert applied(rows) == [("delete", "instance_security_groups")]
    assert sg not in [g["GroupId"] for g in instance(aws, iid)["SecurityGroups"]]
    assert instance(aws, iid) is not None

    # a new instance type or ami replaces the instance; the row keeps its id
    [(pk,)] = await sql(dsn, "SELECT id FROM instance")
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE instance SET instance_type = 't3.small'")
    preview = await call(registry, ctx, "iasql_preview")
    assert [(a, t, i) for a, t, i, _ in preview] == [("replace", "instance", iid)]
    rows = await call(registry, ctx, "iasql_commit")
    assert applied(rows) == [("replace", "instance")]
    [(pk2, iid2, itype)] = await sql(dsn, "SELECT id, instance_id, instance_type FROM instance")
    assert pk2 == pk and iid2 != iid and itype == "t3.small"
    assert instance(aws, iid) is None and instance(aws, iid2)["InstanceType"] == "t3.small"
    other_ami = sorted(i["ImageId"] for i in ec2.describe_images(Owners=["amazon"])["Images"])[1]
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE instance SET ami = %s", (other_ami,))
    rows = await call(registry, ctx, "iasql_commit")
    [(iid3,)] = await sql(dsn, "SELECT instance_id FROM instance")
    assert applied(rows) == [("replace", "instance")] and iid3 != iid2
    assert instance(aws, iid2) is None and instance(aws, iid3)["ImageId"] == other_ami
    assert await sql(dsn, "SELECT count(*) FROM instance_metadata WHERE instance_id = %s", (iid3,)) == [(1,)]

    # an impossible state change fails the commit and leaves the instance as it was
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE instance SET state = 'stopped'")
    await call(registry, ctx, "iasql_commit")
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE instance SET state = 'hibernate'")
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "iasql_commit")
    assert ei.value.sqlstate == "58000" and "From CLOUD state stopped to DB state hibernate" in ei.value.message
    assert instance(aws, iid3)["State"]["Name"] == "stopped"

    # delete: terminated; the metadata row goes with the instance row
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "DELETE FROM instance")
    rows = await call(registry, ctx, "iasql_commit")
    assert applied(rows) == [("delete", "instance")]
    assert instance(aws, iid3) is None
    assert await sql(dsn, "SELECT count(*) FROM instance_metadata") == [(0,)]


async def test_drift_in_the_cloud_is_pulled_back_by_rollback(registry, ctx, dsn, aws, ec2_mod):
    ec2 = aws("ec2")
    [a, b] = ec2.run_instances(ImageId=ami_of(aws), InstanceType="t2.micro", MinCount=2, MaxCount=2)["Instances"]
    await call(registry, ctx, "iasql_begin")
    await call(registry, ctx, "iasql_rollback")
    assert await sql(dsn, "SELECT count(*) FROM instance") == [(2,)]
    ec2.create_tags(Resources=[a["InstanceId"]], Tags=[{"Key": "team", "Value": "blue"}])
    ec2.stop_instances(InstanceIds=[a["InstanceId"]])
    ec2.terminate_instances(InstanceIds=[b["InstanceId"]])
    await call(registry, ctx, "iasql_begin")
    rows = await call(registry, ctx, "iasql_rollback")
    assert sorted((act, t) for act, t, _, _ in rows if t == "instance") == [("delete", "instance"), ("update", "instance")]
    assert await sql(dsn, "SELECT instance_id, state::text, tags::text FROM instance") == [
        (a["InstanceId"], "stopped", '{"team": "blue"}')]

    # read-only metadata: an edit and a delete are turned back, no cloud call planned
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE instance_metadata SET cpu_cores = 64")
    await sql(dsn, "DELETE FROM instance_metadata")
    assert await call(registry, ctx, "iasql_preview") == []
    await call(registry, ctx, "iasql_commit")
    assert await sql(dsn, "SELECT instance_id, cpu_cores FROM instance_metadata") == [(a["InstanceId"], 1)]


async def test_two_regions(registry, ctx, dsn, aws, ec2_mod):
    west = aws("ec2", "us-west-2")
    [made] = west.run_instances(ImageId=ami_of(aws, "us-west-2"), InstanceType="t2.micro", MinCount=1,
                                MaxCount=1)["Instances"]
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE aws_regions SET is_enabled = true WHERE region = 'us-west-2'")
    await call(registry, ctx, "iasql_commit")
    assert await sql(dsn, "SELECT instance_id, region FROM instance") == [(made["InstanceId"], "us-west-2")]
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO instance (ami, instance_type, region) VALUES (%s, 't2.nano', 'us-west-2'), "
                   "(%s, 't2.nano', 'us-east-1')", (ami_of(aws, "us-west-2"), ami_of(aws)))
    rows = await call(registry, ctx, "iasql_commit")
    assert applied(rows) == [("create", "instance")] * 2
    got = await sql(dsn, "SELECT region, count(*) FROM instance GROUP BY region ORDER BY region")
    assert got == [("us-east-1", 1), ("us-west-2", 2)]
    [(east_iid,)] = await sql(dsn, "SELECT instance_id FROM instance WHERE region = 'us-east-1'")
    assert instance(aws, east_iid)["InstanceType"] == "t2.nano"
    assert len([i for r in west.describe_instances()["Reservations"] for i in r["Instances"]]) == 2
    assert await sql(dsn, "SELECT region, count(*) FROM instance_metadata GROUP BY region ORDER BY region") == got
    # a region switched off: its rows stay as they are
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE aws_regions SET is_enabled = false WHERE region = 'us-west-2'")
    await call(registry, ctx, "iasql_commit")
    assert await sql(dsn, "SELECT region, count(*) FROM instance GROUP BY region ORDER BY region") == got


async def test_key_pairs(registry, ctx, dsn, aws, ec2_mod):
    ec2 = aws("ec2")
    key = public_key()
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO key_pair (name, public_key) VALUES ('deploy', %s)", (key,))
    rows = await call(registry, ctx, "iasql_commit")
    assert applied(rows) == [("create", "key_pair")]
    [kp] = ec2.describe_key_pairs(KeyNames=["deploy"])["KeyPairs"]
    assert await sql(dsn, "SELECT key_pair_id, fingerprint, type::text FROM key_pair") == [
        (kp["KeyPairId"], kp["KeyFingerprint"], "rsa")]
    # AWS's columns are not pushed: an edit is turned back by the sync
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE key_pair SET fingerprint = 'forged'")
    assert await call(registry, ctx, "iasql_preview") == []
    await call(registry, ctx, "iasql_commit")
    assert await sql(dsn, "SELECT fingerprint FROM key_pair") == [(kp["KeyFingerprint"],)]
    # an instance with the key pair
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO instance (ami, instance_type, key_pair_name) VALUES (%s, 't2.micro', 'deploy')",
              (ami_of(aws),))
    await call(registry, ctx, "iasql_commit")
    [(iid,)] = await sql(dsn, "SELECT instance_id FROM instance")
    assert instance(aws, iid)["KeyName"] == "deploy"
    # without a public key there is nothing to import: the commit fails, nothing is left behind
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO key_pair (name) VALUES ('nokey')")
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "iasql_commit")
    assert ei.value.sqlstate == "58000" and "has no public_key to import" in ei.value.message
    assert await sql(dsn, "SELECT name FROM key_pair") == [("deploy",)]
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "DELETE FROM key_pair")
    rows = await call(registry, ctx, "iasql_commit")
    assert applied(rows) == [("delete", "key_pair")]
    assert ec2.describe_key_pairs()["KeyPairs"] == []


async def test_role_must_be_assumable_by_ec2(registry, ctx, dsn, aws, ec2_mod):
    iam = aws("iam")
    doc = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "%s"}, ' \
          '"Action": "sts:AssumeRole"}]}'
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO iam_role (role_name, assume_role_policy_document) VALUES ('ec2-app', %s), "
                   "('lambda-app', %s)", (doc % "ec2.amazonaws.com", doc % "lambda.amazonaws.com"))
    await call(registry, ctx, "iasql_commit")
    with pytest.raises(Exception, match="check_role_ec2"):
        await sql(dsn, "INSERT INTO instance (ami, instance_type, role_name) VALUES ('ami-x', 't2.micro', 'lambda-app')")
    # aws_iam made the instance profile named after the EC2 role (as IaSQL's), not for the other
    [prof] = iam.list_instance_profiles()["InstanceProfiles"]
    assert prof["InstanceProfileName"] == "ec2-app" and [r["RoleName"] for r in prof["Roles"]] == ["ec2-app"]
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO instance (ami, instance_type, role_name) VALUES (%s, 't2.micro', 'ec2-app')",
              (ami_of(aws),))
    await call(registry, ctx, "iasql_commit")
    [(iid, role)] = await sql(dsn, "SELECT instance_id, role_name FROM instance")
    assert role == "ec2-app" and instance(aws, iid)["IamInstanceProfile"]["Arn"].endswith(":instance-profile/ec2-app")
    # deleting the instance and the role in one commit deletes the instance profile too
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "DELETE FROM instance")
    await sql(dsn, "DELETE FROM iam_role WHERE role_name = 'ec2-app'")
    await call(registry, ctx, "iasql_commit")
    assert iam.list_instance_profiles()["InstanceProfiles"] == []
    assert [r["RoleName"] for r in iam.list_roles()["Roles"]] == ["lambda-app"]


async def test_role_and_instance_launched_with_it_in_one_commit(registry, ctx, dsn, aws, ec2_mod):
    doc = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, ' \
          '"Action": "sts:AssumeRole"}]}'
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO iam_role (role_name, assume_role_policy_document) VALUES ('web-role', %s)", (doc,))
    await sql(dsn, "INSERT INTO instance (ami, instance_type, role_name) VALUES (%s, 't2.micro', 'web-role')",
              (ami_of(aws),))
    rows = await call(registry, ctx, "iasql_commit")
    assert [t for _, t in applied(rows)] == ["iam_role", "instance"]
    [(iid,)] = await sql(dsn, "SELECT instance_id FROM instance WHERE role_name = 'web-role'")
    assert instance(aws, iid)["IamInstanceProfile"]["Arn"].endswith(":instance-profile/web-role")
    await call(registry, ctx, "iasql_begin")
    assert await call(registry, ctx, "iasql_preview") == []
    await call(registry, ctx, "iasql_commit")


async def test_ami_resolved_through_ssm(registry, ctx, dsn, aws, ec2_mod):
    param = "/aws/service/ami-amazon-linux-latest/amzn2-ami-hvm-x86_64-gp2"
    resolved = aws("ssm").get_parameter(Name=param)["Parameter"]["Value"]
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO instance (ami, instance_type, user_data) VALUES (%s, 't2.micro', '')",
              (f"resolve:ssm:{param}",))
    rows = await call(registry, ctx, "iasql_commit")
    assert applied(rows) == [("create", "instance")]
    [(iid, ami)] = await sql(dsn, "SELECT instance_id, ami FROM instance")
    assert ami == resolved and instance(aws, iid)["ImageId"] == resolved  # the sync wrote the image id back
    await call(registry, ctx, "iasql_begin")
    assert await call(registry, ctx, "iasql_preview") == []  # nothing differs ('' user data is none)
    await call(registry, ctx, "iasql_rollback")
