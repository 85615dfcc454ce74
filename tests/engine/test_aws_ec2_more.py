"""aws_ec2's registered_instance, EBS volumes and instance profiles through the engine against a
real moto server, checked with boto3 and the tables."""

from __future__ import annotations

from tests.engine.support import call, sql
from tests.engine.test_aws_ec2 import ami_of, applied, ec2_mod  # noqa: F401  (fixture)


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
    try:
        await sql(dsn, "INSERT INTO registered_instance (instance, target_group_id) "
                       "SELECT i.id, t.id FROM instance i, target_group t WHERE t.target_group_arn = %s", (ip_arn,))
        raise AssertionError("an ip target group took an instance")
    except Exception as e:  # noqa: BLE001
        assert "check_target_group_instance" in str(e)
