"""aws_ec2's registered_instance, EBS volumes and instance profiles through the engine against a
real moto server, checked with boto3 and the tables."""

from __future__ import annotations

import pytest

from tests.engine.support import call, sql
from tests.engine.test_aws_ec2 import ami_of, applied


@pytest.fixture
async def ec2_mod(registry, ctx, dsn):
    """aws_ec2 (with its dependencies, aws_elb among them) installed, credentials set."""
    await call(registry, ctx, "iasql_install", "aws_ec2")
    await sql(dsn, "INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES ('testing', 'testing')")


def registrations(aws, arn, region="us-east-1") -> list[tuple[str, int]]:
    """(instance id, port) of the targets registered in ``arn``."""
    res = aws("elbv2", region).describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
    return sorted((d["Target"]["Id"], d["Target"].get("Port")) for d in res)


async def test_registered_instance_in_one_commit_port_change_and_deregister(registry, ctx, dsn, aws, ec2_mod):
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO target_group (target_group_name, target_type, protocol, port) "
                   "VALUES ('web-tg', 'instance', 'HTTP', 80)")
    await sql(dsn, "INSERT INTO instance (ami, instance_type, tags) VALUES (%s, 't2.micro', '{\"name\": \"web\"}')",
              (ami_of(aws),))
    await sql(dsn, "INSERT INTO registered_instance (instance, target_group_id) "
                   "SELECT i.id, t.id FROM instance i, target_group t")
    preview = await call(registry, ctx, "iasql_preview")
    assert sorted((a, t) for a, t, _, _ in preview) == [
        ("create", "instance"), ("create", "registered_instance"), ("create", "target_group")]
    [ri] = [r for r in preview if r[1] == "registered_instance"]
    assert "on port the group's port in us-east-1" in ri[3]
    rows = await call(registry, ctx, "iasql_commit")
    assert [t for _, t in applied(rows)] == ["target_group", "instance", "registered_instance"]
    [(iid, arn, port)] = await sql(dsn, "SELECT i.instance_id, t.target_group_arn, r.port FROM registered_instance r "
                                        "JOIN instance i ON i.id = r.instance JOIN target_group t ON t.id = r.target_group_id")
    assert port == 80 and registrations(aws, arn) == [(iid, 80)]
    await call(registry, ctx, "iasql_begin")
    assert await call(registry, ctx, "iasql_preview") == []
    await call(registry, ctx, "iasql_commit")

    # a new port is a new registration: the old one goes
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE registered_instance SET port = 8080")
    rows = await call(registry, ctx, "iasql_commit")
    assert sorted(applied(rows)) == [("create", "registered_instance"), ("delete", "registered_instance")]
    assert registrations(aws, arn) == [(iid, 8080)]
    assert await sql(dsn, "SELECT port FROM registered_instance") == [(8080,)]

    # deleting the row deregisters
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "DELETE FROM registered_instance")
    rows = await call(registry, ctx, "iasql_commit")
    assert applied(rows) == [("delete", "registered_instance")]
    assert registrations(aws, arn) == []


async def test_registered_instance_made_with_boto3_is_imported_and_checked(registry, ctx, dsn, aws, ec2_mod):
    ec2, elb = aws("ec2"), aws("elbv2")
    [made] = ec2.run_instances(ImageId=ami_of(aws), InstanceType="t2.micro", MinCount=1, MaxCount=1)["Instances"]
    vpc = made["VpcId"]
    arn = elb.create_target_group(Name="imp", Protocol="HTTP", Port=81, VpcId=vpc,
                                  TargetType="instance")["TargetGroups"][0]["TargetGroupArn"]
    ip_arn = elb.create_target_group(Name="ips", Protocol="HTTP", Port=82, VpcId=vpc,
                                     TargetType="ip")["TargetGroups"][0]["TargetGroupArn"]
    elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": made["InstanceId"], "Port": 9000}])
    await call(registry, ctx, "iasql_begin")
    await call(registry, ctx, "iasql_rollback")
    assert await sql(dsn, "SELECT i.instance_id, t.target_group_arn, r.port, r.region FROM registered_instance r "
                          "JOIN instance i ON i.id = r.instance JOIN target_group t ON t.id = r.target_group_id") == [
        (made["InstanceId"], arn, 9000, "us-east-1")]
    # drift: registered elsewhere in the cloud, rollback follows
    elb.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": made["InstanceId"], "Port": 9000}])
    await call(registry, ctx, "iasql_begin")
    rows = await call(registry, ctx, "iasql_rollback")
    assert [(a, t) for a, t, _, _ in rows if t == "registered_instance"] == [("delete", "registered_instance")]
    assert await sql(dsn, "SELECT count(*) FROM registered_instance") == [(0,)]
    # only instance target groups take instances (IaSQL's check_target_group_instance)
    await call(registry, ctx, "iasql_begin")
    with pytest.raises(Exception, match="check_target_group_instance"):
        await sql(dsn, "INSERT INTO registered_instance (instance, target_group_id) "
                       "SELECT i.id, t.id FROM instance i, target_group t WHERE t.target_group_arn = %s", (ip_arn,))


def volume(aws, vid, region="us-east-1") -> dict | None:
    """The describe record of volume ``vid`` (None when gone)."""
    try:
        [v] = aws("ec2", region).describe_volumes(VolumeIds=[vid])["Volumes"]
    except Exception as e:
        if "InvalidVolume.NotFound" in str(e):
            return None
        raise
    return v


async def test_volume_create_update_attach_detach_delete(registry, ctx, dsn, aws, ec2_mod):
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO general_purpose_volume (volume_type, size, availability_zone, tags) "
                   "VALUES ('gp3', 10, 'us-east-1a', '{\"Name\": \"data\"}')")
    await sql(dsn, "INSERT INTO instance (ami, instance_type, subnet_id) SELECT %s, 't2.micro', s.id FROM subnet s "
                   "WHERE s.availability_zone = 'us-east-1a' LIMIT 1", (ami_of(aws),))
    await sql(dsn, "INSERT INTO instance_block_device_mapping (device_name, instance_id, volume_id, "
                   "delete_on_termination) SELECT '/dev/sdf', i.id, v.id, false FROM instance i, general_purpose_volume v")
    preview = await call(registry, ctx, "iasql_preview")
    assert sorted((a, t) for a, t, _, _ in preview) == [
        ("create", "general_purpose_volume"), ("create", "instance"), ("create", "instance_block_device_mapping")]
    rows = await call(registry, ctx, "iasql_commit")
    assert [t for _, t in applied(rows)] == ["general_purpose_volume", "instance", "instance_block_device_mapping"]
    [(vid, iid, state)] = await sql(dsn, "SELECT v.volume_id, i.instance_id, v.state::text FROM general_purpose_volume v "
                                         "JOIN instance_block_device_mapping m ON m.volume_id = v.id "
                                         "JOIN instance i ON i.id = m.instance_id WHERE m.device_name = '/dev/sdf'")
    v = volume(aws, vid)
    assert (v["Size"], v["VolumeType"], v["Tags"], state) == (10, "gp3", [{"Key": "Name", "Value": "data"}], "in-use")
    assert [(a["InstanceId"], a["Device"]) for a in v["Attachments"]] == [(iid, "/dev/sdf")]
    # the instance's root volume is imported, marked as such, with its mapping
    assert await sql(dsn, "SELECT count(*) FROM general_purpose_volume WHERE is_root_device") == [(1,)]
    assert await sql(dsn, "SELECT device_name, delete_on_termination FROM instance_block_device_mapping "
                          "ORDER BY device_name") == [("/dev/sda1", True), ("/dev/sdf", False)]
    await call(registry, ctx, "iasql_begin")
    assert await call(registry, ctx, "iasql_preview") == []
    await call(registry, ctx, "iasql_commit")

    # size and iops change in place
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE general_purpose_volume SET size = 20, iops = 4000 WHERE volume_id = %s", (vid,))
    rows = await call(registry, ctx, "iasql_commit")
    assert applied(rows) == [("update", "general_purpose_volume")]
    v = volume(aws, vid)
    assert (v["Size"], v["Iops"]) == (20, 4000)

    # the mapping's row goes: detached; then the volume's row goes: deleted
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "DELETE FROM instance_block_device_mapping WHERE device_name = '/dev/sdf'")
    await call(registry, ctx, "iasql_commit")
    assert volume(aws, vid)["State"] == "available"
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "DELETE FROM general_purpose_volume WHERE volume_id = %s", (vid,))
    rows = await call(registry, ctx, "iasql_commit")
    assert applied(rows) == [("delete", "general_purpose_volume")]
    assert volume(aws, vid) is None


async def test_volume_import_drift_and_two_regions(registry, ctx, dsn, aws, ec2_mod):
    ec2, west = aws("ec2"), aws("ec2", "us-west-2")
    a = ec2.create_volume(AvailabilityZone="us-east-1b", Size=5, VolumeType="gp2")["VolumeId"]
    ec2.create_volume(AvailabilityZone="us-east-1b", Size=5, VolumeType="io1", Iops=100)  # not general purpose
    b = west.create_volume(AvailabilityZone="us-west-2a", Size=7, VolumeType="gp3")["VolumeId"]
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE aws_regions SET is_enabled = true WHERE region = 'us-west-2'")
    await call(registry, ctx, "iasql_commit")
    assert await sql(dsn, "SELECT volume_id, volume_type::text, size, availability_zone, region, state::text "
                          "FROM general_purpose_volume ORDER BY region") == [
        (a, "gp2", 5, "us-east-1b", "us-east-1", "available"), (b, "gp3", 7, "us-west-2a", "us-west-2", "available")]
    # drift: resized and tagged in the cloud, rollback follows
    ec2.modify_volume(VolumeId=a, Size=6)
    ec2.create_tags(Resources=[a], Tags=[{"Key": "team", "Value": "blue"}])
    await call(registry, ctx, "iasql_begin")
    await call(registry, ctx, "iasql_rollback")
    assert await sql(dsn, "SELECT size, tags::text FROM general_purpose_volume WHERE volume_id = %s", (a,)) == [
        (6, '{"team": "blue"}')]
    # a new zone replaces the volume; a volume made in us-west-2 from a row
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE general_purpose_volume SET availability_zone = 'us-east-1c' WHERE volume_id = %s", (a,))
    await sql(dsn, "INSERT INTO general_purpose_volume (volume_type, size, availability_zone, region) "
                   "VALUES ('gp2', 3, 'us-west-2b', 'us-west-2')")
    rows = await call(registry, ctx, "iasql_commit")
    assert sorted(applied(rows)) == [("create", "general_purpose_volume"), ("replace", "general_purpose_volume")]
    assert volume(aws, a) is None
    assert await sql(dsn, "SELECT availability_zone, size FROM general_purpose_volume WHERE region = 'us-east-1'") == [
        ("us-east-1c", 6)]
    assert sorted(v["Size"] for v in west.describe_volumes()["Volumes"]) == [3, 7]
