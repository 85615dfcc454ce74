"""Module aws_memory_db through the engine against a real moto server, checked with boto3 and the tables."""

from __future__ import annotations

import pytest

from tests.engine.support import call, sql


@pytest.fixture
async def mdb_mod(registry, ctx, dsn):
    """aws_memory_db installed (with aws_vpc and aws_security_group); returns the install rows."""
    rows = await call(registry, ctx, "iasql_install", "aws_memory_db")
    await sql(dsn, "INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES ('testing', 'testing')")
    return rows


def clusters(aws, region="us-east-1"):
    return {c["Name"]: c for c in aws("memorydb", region).describe_clusters()["Clusters"]}


async def test_install_imports_the_default_subnet_group(registry, ctx, dsn, aws, mdb_mod):
    assert {t: n for _, t, n in mdb_mod} == {"subnet_group": 1, "memory_db_cluster": 0,
                                             "memory_db_cluster_security_groups": 0}
    [g] = aws("memorydb").describe_subnet_groups()["SubnetGroups"]
    assert await sql(dsn, "SELECT subnet_group_name, arn, subnets FROM subnet_group") == [
        ("default", g["ARN"], [s["Identifier"] for s in g["Subnets"]])]
    # AWS's default group stays: deleting its row plans nothing, the sync brings it back
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "DELETE FROM subnet_group")
    assert await call(registry, ctx, "iasql_preview") == []
    await call(registry, ctx, "iasql_commit")
    assert await sql(dsn, "SELECT subnet_group_name FROM subnet_group") == [("default",)]
    # IaSQL's triggers: subnets must exist (and be of one VPC); a named subnet cannot go
    await call(registry, ctx, "iasql_begin")
    with pytest.raises(Exception) as ei:
        await sql(dsn, "INSERT INTO subnet_group (subnet_group_name, subnets) VALUES ('bad', %s)",
                  ([g["Subnets"][0]["Identifier"], "subnet-nope"],))
    assert "Subnets must be from the same vpc and region." in str(ei.value)
    with pytest.raises(Exception) as ei:
        await sql(dsn, "DELETE FROM subnet WHERE subnet_id = %s", (g["Subnets"][0]["Identifier"],))
    assert "is being used by MemoryDB Subnet Group default" in str(ei.value)
    await call(registry, ctx, "iasql_rollback")
    # uninstall drops the tables, the type and the trigger it put on aws_vpc's subnet
    assert await call(registry, ctx, "iasql_uninstall", "aws_memory_db")
    assert await sql(dsn, "SELECT to_regclass('public.subnet_group'), to_regtype('public.memory_db_cluster_node_type_enum'), "
                          "(SELECT count(*) FROM pg_trigger WHERE tgname = 'check_subnets_by_subnet_group')") == [
        (None, None, 0)]


async def test_security_group_subnet_group_and_cluster_in_one_commit(registry, ctx, dsn, aws, mdb_mod):
    subnets = [s for (s,) in await sql(dsn, "SELECT s.subnet_id FROM subnet s JOIN vpc v ON v.id = s.vpc_id "
                                            "WHERE v.is_default ORDER BY s.subnet_id LIMIT 2")]
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO security_group (description, group_name) VALUES ('cache', 'cache-sg')")
    await sql(dsn, "INSERT INTO subnet_group (subnet_group_name, description, subnets) VALUES ('cache-sng', 'two', %s)",
              (subnets,))
    await sql(dsn, """INSERT INTO memory_db_cluster (cluster_name, description, subnet_group_id, tags)
                      SELECT 'cache', 'app cache', id, '{"app": "web"}' FROM subnet_group WHERE subnet_group_name = 'cache-sng'""")
    await sql(dsn, "INSERT INTO memory_db_cluster_security_groups (memory_db_cluster_id, region, security_group_id) "
                   "SELECT c.id, c.region, g.id FROM memory_db_cluster c, security_group g WHERE g.group_name = 'cache-sg'")
    [(c_pk,)] = await sql(dsn, "SELECT id FROM memory_db_cluster")
    [(sg_pk,)] = await sql(dsn, "SELECT id FROM security_group WHERE group_name = 'cache-sg'")
    preview = await call(registry, ctx, "iasql_preview")
    assert sorted(preview) == sorted([
        ("create", "security_group", str(sg_pk), "security group cache-sg (new) in us-east-1"),
        ("create", "subnet_group", "cache-sng|us-east-1", "MemoryDB subnet group cache-sng in us-east-1"),
        ("create", "memory_db_cluster", "cache|us-east-1", "MemoryDB cluster cache (db.r6g.large) in us-east-1"),
        ("create", "memory_db_cluster_security_groups", f"{c_pk}|us-east-1|{sg_pk}",
         f"security group #{sg_pk} of memory_db_cluster #{c_pk}")])
    rows = await call(registry, ctx, "iasql_commit")
    applied = [t for a, t, _, d in rows if not d.startswith("synced")]
    assert applied.index("security_group") < applied.index("memory_db_cluster")
    assert applied.index("subnet_group") < applied.index("memory_db_cluster")
    [sg] = aws("ec2").describe_security_groups(GroupNames=["cache-sg"])["SecurityGroups"]
    c = clusters(aws)["cache"]
    assert (c["NodeType"], c["Description"], c["SubnetGroupName"], c["ACLName"], c["ClusterEndpoint"]["Port"]) == (
        "db.r6g.large", "app cache", "cache-sng", "open-access", 6379)
    assert [g["SecurityGroupId"] for g in c["SecurityGroups"]] == [sg["GroupId"]]
    assert aws("memorydb").list_tags(ResourceArn=c["ARN"])["TagList"] == [{"Key": "app", "Value": "web"}]
    assert await sql(dsn, "SELECT arn, address, status, port FROM memory_db_cluster") == [
        (c["ARN"], c["ClusterEndpoint"]["Address"], "available", 6379)]

    # in place: node type, description, tags
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, """UPDATE memory_db_cluster SET node_type = 'db.r6g.xlarge', description = 'bigger',
                      tags = '{"app": "api"}'""")
    rows = await call(registry, ctx, "iasql_commit")
    assert [(a, t, i) for a, t, i, d in rows if not d.startswith("synced")] == [
        ("update", "memory_db_cluster", "cache|us-east-1")]
    c2 = clusters(aws)["cache"]
    assert (c2["ARN"], c2["NodeType"], c2["Description"]) == (c["ARN"], "db.r6g.xlarge", "bigger")
    assert aws("memorydb").list_tags(ResourceArn=c["ARN"])["TagList"] == [{"Key": "app", "Value": "api"}]

    # (a security group added to an existing cluster is not tested: moto's update_cluster stores
    # SecurityGroupIds but its describe_clusters keeps answering the groups of the create)

    # a new port replaces the cluster (as IaSQL's updateOrReplace)
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE memory_db_cluster SET port = 6380")
    rows = await call(registry, ctx, "iasql_commit")
    assert next((a, t) for a, t, _, d in rows if not d.startswith("synced")) == ("replace", "memory_db_cluster")
    c3 = clusters(aws)["cache"]
    assert c3["ClusterEndpoint"]["Port"] == 6380
    assert [g["SecurityGroupId"] for g in c3["SecurityGroups"]] == [sg["GroupId"]]
    assert await sql(dsn, "SELECT memory_db_cluster_id, security_group_id FROM memory_db_cluster_security_groups") == [
        (c_pk, sg_pk)]
    assert await sql(dsn, "SELECT id, port FROM memory_db_cluster") == [(c_pk, 6380)]

    # moto does not implement update_subnet_group: the change fails and the commit is reverted
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE subnet_group SET description = 'changed' WHERE subnet_group_name = 'cache-sng'")
    with pytest.raises(Exception) as ei:
        await call(registry, ctx, "iasql_commit")
    assert "update_subnet_group" in str(ei.value)
    assert await sql(dsn, "SELECT description FROM subnet_group WHERE subnet_group_name = 'cache-sng'") == [("two",)]

    # delete: the cluster first, then its subnet group
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "DELETE FROM memory_db_cluster; DELETE FROM subnet_group WHERE subnet_group_name = 'cache-sng'")
    rows = await call(registry, ctx, "iasql_commit")
    assert [t for a, t, _, d in rows if a == "delete" and not d.startswith("synced")] == [
        "memory_db_cluster", "subnet_group"]
    assert clusters(aws) == {}
    assert [g["Name"] for g in aws("memorydb").describe_subnet_groups()["SubnetGroups"]] == ["default"]


async def test_import_drift_and_two_regions(registry, ctx, dsn, aws, mdb_mod):
    mdb = aws("memorydb")
    mdb.create_cluster(ClusterName="imported", NodeType="db.t4g.small", ACLName="open-access",
                       SubnetGroupName="default", Description="made outside", Tags=[{"Key": "k", "Value": "v"}])
    await call(registry, ctx, "iasql_begin")
    rows = await call(registry, ctx, "iasql_rollback")
    assert ("create", "memory_db_cluster", "imported|us-east-1") in {(a, t, i) for a, t, i, _ in rows}
    assert await sql(dsn, "SELECT c.node_type::text, c.description, c.tags::text, g.subnet_group_name FROM "
                          "memory_db_cluster c JOIN subnet_group g ON g.id = c.subnet_group_id") == [
        ("db.t4g.small", "made outside", '{"k": "v"}', "default")]
    # drift pulled back
    mdb.update_cluster(ClusterName="imported", Description="changed outside")
    await call(registry, ctx, "iasql_begin")
    assert await call(registry, ctx, "iasql_preview") == [
        ("update", "memory_db_cluster", "imported|us-east-1", "MemoryDB cluster imported (db.t4g.small) in us-east-1")]
    await call(registry, ctx, "iasql_rollback")
    assert await sql(dsn, "SELECT description FROM memory_db_cluster") == [("changed outside",)]
    # a second region: its default subnet group comes in, a cluster goes to that region only
    await sql(dsn, "UPDATE aws_regions SET is_enabled = true WHERE region = 'eu-west-1'")
    await call(registry, ctx, "iasql_begin")
    await call(registry, ctx, "iasql_rollback")
    assert await sql(dsn, "SELECT subnet_group_name, region FROM subnet_group ORDER BY region") == [
        ("default", "eu-west-1"), ("default", "us-east-1")]
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO memory_db_cluster (cluster_name, subnet_group_id, region) "
                   "SELECT 'eu-cache', id, region FROM subnet_group WHERE region = 'eu-west-1'")
    await call(registry, ctx, "iasql_commit")
    assert list(clusters(aws, "eu-west-1")) == ["eu-cache"] and "eu-cache" not in clusters(aws)
    # a subnet group of another region is refused by the foreign key
    await call(registry, ctx, "iasql_begin")
    with pytest.raises(Exception) as ei:
        await sql(dsn, "UPDATE memory_db_cluster SET subnet_group_id = (SELECT id FROM subnet_group "
                       "WHERE region = 'us-east-1') WHERE cluster_name = 'eu-cache'")
    assert "FK_88d06dfe65afb98a71707759361" in str(ei.value)
    await call(registry, ctx, "iasql_rollback")
