"""Module aws_route53's alias records (to aws_elb's load balancers) through the engine against a
real moto server, checked with boto3 and the tables."""

from __future__ import annotations

import pytest

from engine.rpc import EngineError
from tests.engine.support import call, sql


@pytest.fixture
async def r53_mod(registry, ctx, dsn):
    """aws_route53 installed (with aws_elb and its dependencies); returns the install rows."""
    rows = await call(registry, ctx, "iasql_install", "aws_route53")
    await sql(dsn, "INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES ('testing', 'testing')")
    return rows


def applied(rows):
    """(action, table) of the cloud changes of a commit's rows (sync rows left out)."""
    return [(a, t) for a, t, _, d in rows if not d.startswith("synced")]


def aliases(aws, zone_name):
    """Alias records of zone ``zone_name``: (name, type) -> AliasTarget."""
    r53 = aws("route53")
    zid = next(z["Id"] for z in r53.list_hosted_zones()["HostedZones"] if z["Name"].rstrip(".") == zone_name)
    return {(r["Name"].rstrip("."), r["Type"]): r["AliasTarget"]
            for r in r53.list_resource_record_sets(HostedZoneId=zid)["ResourceRecordSets"] if "AliasTarget" in r}


LB = ("INSERT INTO load_balancer (load_balancer_name, scheme, load_balancer_type, ip_address_type) "
      "VALUES ('{}', 'internet-facing', 'application', 'ipv4')")
ALIAS = ("INSERT INTO resource_record_set (name, record_type, parent_hosted_zone_id, alias_target_id) "
         "SELECT '{}', 'A', z.id, a.id FROM hosted_zone z, alias_target a WHERE rtrim(z.domain_name, '.') = '{}' "
         "AND a.id = (SELECT max(id) FROM alias_target)")


async def test_install_has_the_foreign_key_and_the_dependency(registry, ctx, dsn, r53_mod):
    assert {m for m, _, _ in r53_mod} == {"aws_route53@0.1.0"}
    assert await sql(dsn, "SELECT pg_catalog.to_regclass('public.load_balancer')::text") == [("load_balancer",)]
    assert await sql(dsn, "SELECT conname, confrelid::regclass::text FROM pg_constraint "
                          "WHERE conrelid = 'alias_target'::regclass AND contype = 'f'") == [
        ("FK_4c791487240505a79afaad2a41c", "load_balancer")]
    # aws_elb cannot go while aws_route53 needs it
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "iasql_uninstall", "aws_elb")
    assert "aws_route53" in ei.value.message


async def test_load_balancer_zone_and_alias_in_one_commit_then_update_and_delete(registry, ctx, dsn, aws, r53_mod):
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, LB.format("web-lb"))
    await sql(dsn, "INSERT INTO hosted_zone (domain_name) VALUES ('alias.example')")
    await sql(dsn, "INSERT INTO alias_target (evaluate_target_health, load_balancer_id) "
                   "SELECT false, id FROM load_balancer WHERE load_balancer_name = 'web-lb'")
    await sql(dsn, ALIAS.format("www.alias.example", "alias.example"))
    [(at_pk,)] = await sql(dsn, "SELECT id FROM alias_target")
    [(rrs_pk,)] = await sql(dsn, "SELECT id FROM resource_record_set WHERE alias_target_id IS NOT NULL")
    preview = await call(registry, ctx, "iasql_preview")
    [(zone_pk,)] = await sql(dsn, "SELECT id FROM hosted_zone")
    assert ("create", "resource_record_set", f"{zone_pk}|www.alias.example|A",
            f"A alias record www.alias.example of zone #{zone_pk}") in preview
    assert sorted({(a, t) for a, t, _, _ in preview}) == [
        ("create", "hosted_zone"), ("create", "load_balancer"), ("create", "resource_record_set")]
    assert aws("route53").list_hosted_zones()["HostedZones"] == []  # preview changes nothing

    rows = await call(registry, ctx, "iasql_commit")
    assert applied(rows) == [("create", "load_balancer"), ("create", "hosted_zone"), ("create", "resource_record_set")]
    [lb] = aws("elbv2").describe_load_balancers()["LoadBalancers"]
    assert aliases(aws, "alias.example") == {("www.alias.example", "A"): {
        "HostedZoneId": lb["CanonicalHostedZoneId"], "DNSName": f"dualstack.{lb['DNSName']}",
        "EvaluateTargetHealth": False}}
    # the rows are as written: the alias target kept its id, the record set points at it
    assert await sql(dsn, "SELECT id, evaluate_target_health FROM alias_target") == [(at_pk, False)]
    assert await sql(dsn, "SELECT id, alias_target_id, record, ttl FROM resource_record_set "
                          "WHERE record_type = 'A'") == [(rrs_pk, at_pk, None, None)]
    await call(registry, ctx, "iasql_begin")
    assert await call(registry, ctx, "iasql_preview") == []

    # update: evaluate_target_health
    await sql(dsn, "UPDATE alias_target SET evaluate_target_health = true")
    assert [(a, t, i) for a, t, i, _ in await call(registry, ctx, "iasql_preview")] == [
        ("update", "alias_target", str(at_pk))]
    rows = await call(registry, ctx, "iasql_commit")
    assert applied(rows) == [("update", "alias_target")]
    assert aliases(aws, "alias.example")[("www.alias.example", "A")]["EvaluateTargetHealth"] is True
    await call(registry, ctx, "iasql_begin")
    assert await call(registry, ctx, "iasql_preview") == []

    # update: the record set points at a new alias target (another load balancer)
    await sql(dsn, LB.format("api-lb"))
    await sql(dsn, "INSERT INTO alias_target (load_balancer_id) "
                   "SELECT id FROM load_balancer WHERE load_balancer_name = 'api-lb'")
    await sql(dsn, "UPDATE resource_record_set SET alias_target_id = (SELECT max(id) FROM alias_target) "
                   "WHERE alias_target_id IS NOT NULL")
    rows = await call(registry, ctx, "iasql_commit")
    # the new alias target's row differs from the alias it now stands for: both UPSERT the same change
    assert applied(rows) == [("create", "load_balancer"), ("update", "alias_target"), ("update", "resource_record_set")]
    api = next(b for b in aws("elbv2").describe_load_balancers()["LoadBalancers"] if b["LoadBalancerName"] == "api-lb")
    assert aliases(aws, "alias.example")[("www.alias.example", "A")]["DNSName"] == f"dualstack.{api['DNSName']}"

    # delete: the record set and its alias target
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "DELETE FROM resource_record_set WHERE alias_target_id IS NOT NULL")
    await sql(dsn, "DELETE FROM alias_target")
    preview = await call(registry, ctx, "iasql_preview")
    assert [(a, t) for a, t, _, _ in preview] == [("delete", "resource_record_set")]
    rows = await call(registry, ctx, "iasql_commit")
    assert applied(rows) == [("delete", "resource_record_set")]
    assert aliases(aws, "alias.example") == {}
    assert await sql(dsn, "SELECT count(*) FROM alias_target") == [(0,)]
    await call(registry, ctx, "iasql_begin")
    assert await call(registry, ctx, "iasql_preview") == []


async def test_alias_record_made_with_boto3_is_imported_and_drift_comes_back(registry, ctx, dsn, aws, r53_mod):
    elb, r53 = aws("elbv2"), aws("route53")
    ec2 = aws("ec2")
    [vpc] = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    subnets = [s["SubnetId"] for s in ec2.describe_subnets(
        Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["Subnets"]]
    lb = elb.create_load_balancer(Name="oob-lb", Subnets=subnets[:2], Type="application",
                             Scheme="internet-facing")["LoadBalancers"][0]
    nlb = elb.create_load_balancer(Name="oob-nlb", Subnets=subnets[:2], Type="network",
                              Scheme="internet-facing")["LoadBalancers"][0]
    zid = r53.create_hosted_zone(Name="oob.example", CallerReference="oob")["HostedZone"]["Id"]

    def change(action, name, target, eth):
        r53.change_resource_record_sets(HostedZoneId=zid, ChangeBatch={"Changes": [{
            "Action": action, "ResourceRecordSet": {"Name": name, "Type": "A", "AliasTarget": {
                "HostedZoneId": target["CanonicalHostedZoneId"], "DNSName": target["DNSName"],
                "EvaluateTargetHealth": eth}}}]})

    change("CREATE", "app.oob.example", lb, True)  # without IaSQL's dualstack. prefix: matched all the same
    change("CREATE", "net.oob.example", nlb, False)
    r53.change_resource_record_sets(HostedZoneId=zid, ChangeBatch={"Changes": [{
        "Action": "CREATE", "ResourceRecordSet": {"Name": "elsewhere.oob.example", "Type": "A", "AliasTarget": {
            "HostedZoneId": "Z2FDTNDATAQYW2", "DNSName": "d111111abcdef8.cloudfront.net",
            "EvaluateTargetHealth": False}}}]})
    await call(registry, ctx, "iasql_begin")
    await call(registry, ctx, "iasql_rollback")
    imported = await sql(dsn, "SELECT rtrim(r.name, '.'), l.load_balancer_name, a.evaluate_target_health, r.ttl, "
                              "r.record FROM resource_record_set r JOIN alias_target a ON a.id = r.alias_target_id "
                              "JOIN load_balancer l ON l.id = a.load_balancer_id ORDER BY 1")
    assert imported == [("app.oob.example", "oob-lb", True, None, None),
                        ("net.oob.example", "oob-nlb", False, None, None)]
    # the alias to a CloudFront distribution is not read (IaSQL ignores alias targets other than ELB's)
    assert await sql(dsn, "SELECT count(*) FROM resource_record_set WHERE name LIKE 'elsewhere%'") == [(0,)]
    assert await sql(dsn, "SELECT count(*) FROM alias_target") == [(2,)]
    await call(registry, ctx, "iasql_begin")
    assert await call(registry, ctx, "iasql_preview") == []
    await call(registry, ctx, "iasql_rollback")
    assert await sql(dsn, "SELECT count(*) FROM alias_target") == [(2,)]  # nothing made twice

    # drift: evaluate_target_health and the load balancer changed in the cloud
    change("UPSERT", "app.oob.example", lb, False)
    change("UPSERT", "net.oob.example", lb, False)
    [(app_at,)] = await sql(dsn, "SELECT alias_target_id FROM resource_record_set WHERE name LIKE 'app.%'")
    await call(registry, ctx, "iasql_begin")
    await call(registry, ctx, "iasql_rollback")
    assert await sql(dsn, "SELECT rtrim(r.name, '.'), r.alias_target_id = %s, l.load_balancer_name, "
                          "a.evaluate_target_health FROM resource_record_set r "
                          "JOIN alias_target a ON a.id = r.alias_target_id "
                          "JOIN load_balancer l ON l.id = a.load_balancer_id ORDER BY 1", (app_at,)) == [
        ("app.oob.example", True, "oob-lb", False), ("net.oob.example", False, "oob-lb", False)]

    # a user change to an alias target is put back by rollback
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE alias_target SET evaluate_target_health = true")
    assert {(a, t) for a, t, _, _ in await call(registry, ctx, "iasql_preview")} == {("update", "alias_target")}
    await call(registry, ctx, "iasql_rollback")
    assert await sql(dsn, "SELECT DISTINCT evaluate_target_health FROM alias_target") == [(False,)]

    # drift: the alias record deleted in the cloud; its row goes, the alias target row stays
    r53.change_resource_record_sets(HostedZoneId=zid, ChangeBatch={"Changes": [{
        "Action": "DELETE", "ResourceRecordSet": {"Name": "app.oob.example.", "Type": "A", "AliasTarget": aliases(
            aws, "oob.example")[("app.oob.example", "A")]}}]})
    await call(registry, ctx, "iasql_begin")
    preview_rows = await call(registry, ctx, "iasql_rollback")
    assert ("delete", "resource_record_set") in {(a, t) for a, t, _, _ in preview_rows}
    assert await sql(dsn, "SELECT rtrim(name, '.') FROM resource_record_set WHERE alias_target_id IS NOT NULL") == [
        ("net.oob.example",)]
    assert await sql(dsn, "SELECT count(*) FROM alias_target") == [(2,)]


async def test_readme_example(registry, ctx, dsn, aws, r53_mod):
    """README "## Modules": a load balancer, a zone, an alias target and an alias record in one commit."""
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO load_balancer (load_balancer_name, scheme, load_balancer_type, ip_address_type) "
                   "VALUES ('web-lb', 'internet-facing', 'application', 'ipv4')")
    await sql(dsn, "INSERT INTO hosted_zone (domain_name) VALUES ('example.com')")
    await sql(dsn, "INSERT INTO alias_target (load_balancer_id) SELECT id FROM load_balancer "
                   "WHERE load_balancer_name = 'web-lb'")
    await sql(dsn, "INSERT INTO resource_record_set (name, record_type, parent_hosted_zone_id, alias_target_id) "
                   "SELECT 'www.example.com', 'A', z.id, a.id FROM hosted_zone z, alias_target a")
    await call(registry, ctx, "iasql_commit")
    [lb] = aws("elbv2").describe_load_balancers()["LoadBalancers"]
    assert aliases(aws, "example.com") == {("www.example.com", "A"): {
        "HostedZoneId": lb["CanonicalHostedZoneId"], "DNSName": f"dualstack.{lb['DNSName']}",
        "EvaluateTargetHealth": True}}
    # deleting the zone's rows deletes the alias record with the zone
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "DELETE FROM resource_record_set")
    await sql(dsn, "DELETE FROM hosted_zone")
    await call(registry, ctx, "iasql_commit")
    assert aws("route53").list_hosted_zones()["HostedZones"] == []
    assert await sql(dsn, "SELECT count(*) FROM alias_target") == [(1,)]  # used by nothing, left as it is


async def test_failed_commit_takes_back_the_alias_update(registry, ctx, dsn, aws, r53_mod):
    """A commit whose alias_target update (an UPSERT) went through but with a subnet that
    failed is reverted: the alias's evaluate_target_health is put back in the cloud."""
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, LB.format("web-lb"))
    await sql(dsn, "INSERT INTO hosted_zone (domain_name) VALUES ('revert.example')")
    await sql(dsn, "INSERT INTO alias_target (evaluate_target_health, load_balancer_id) SELECT false, id "
                   "FROM load_balancer")
    await sql(dsn, ALIAS.format("www.revert.example", "revert.example"))
    await call(registry, ctx, "iasql_commit")
    ctx.lines.clear()
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE alias_target SET evaluate_target_health = true")
    # a subnet outside its VPC's range: moto refuses it, in every pass
    await sql(dsn, "INSERT INTO subnet (cidr_block, availability_zone, vpc_id) "
                   "SELECT '10.99.0.0/24', 'us-east-1a', id FROM vpc WHERE is_default")
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "iasql_commit")
    assert "taken back" in (ei.value.detail or "") + ei.value.message, ei.value
    # the UPSERT went through, then was taken back with the alias target's values before the commit
    assert "update alias target #1 -> load balancer #1" in ctx.lines
    assert "revert update alias target #1 -> load balancer #1" in ctx.lines
    assert aliases(aws, "revert.example")[("www.revert.example", "A")]["EvaluateTargetHealth"] is False
    assert await sql(dsn, "SELECT evaluate_target_health FROM alias_target") == [(False,)]


async def test_value_record_turned_alias_in_the_cloud_and_back(registry, ctx, dsn, aws, r53_mod):
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, LB.format("web-lb"))
    await sql(dsn, "INSERT INTO hosted_zone (domain_name) VALUES ('turn.example')")
    await sql(dsn, "INSERT INTO resource_record_set (name, record_type, record, ttl, parent_hosted_zone_id) "
                   "SELECT 'www.turn.example', 'A', '192.0.2.1', 300, id FROM hosted_zone")
    await call(registry, ctx, "iasql_commit")
    [(rrs_pk,)] = await sql(dsn, "SELECT id FROM resource_record_set WHERE record_type = 'A'")
    r53 = aws("route53")
    zid = r53.list_hosted_zones()["HostedZones"][0]["Id"]
    [lb] = aws("elbv2").describe_load_balancers()["LoadBalancers"]
    r53.change_resource_record_sets(HostedZoneId=zid, ChangeBatch={"Changes": [
        {"Action": "DELETE", "ResourceRecordSet": {"Name": "www.turn.example", "Type": "A", "TTL": 300,
                                                   "ResourceRecords": [{"Value": "192.0.2.1"}]}},
        {"Action": "CREATE", "ResourceRecordSet": {"Name": "www.turn.example", "Type": "A", "AliasTarget": {
            "HostedZoneId": lb["CanonicalHostedZoneId"], "DNSName": f"DualStack.{lb['DNSName'].upper()}.",
            "EvaluateTargetHealth": True}}}]})
    await call(registry, ctx, "iasql_begin")
    preview = await call(registry, ctx, "iasql_preview")
    [(zone_pk,)] = await sql(dsn, "SELECT id FROM hosted_zone")
    assert [(a, t) for a, t, _, _ in preview] == [("create", "alias_target"), ("update", "resource_record_set")]
    assert preview[1][2] == f"{zone_pk}|www.turn.example|A"
    await call(registry, ctx, "iasql_rollback")
    # the row stays (same id), now an alias record with a new alias target row
    assert await sql(dsn, "SELECT r.id, r.record, r.ttl, a.evaluate_target_health, l.load_balancer_name "
                          "FROM resource_record_set r JOIN alias_target a ON a.id = r.alias_target_id "
                          "JOIN load_balancer l ON l.id = a.load_balancer_id") == [(rrs_pk, None, None, True, "web-lb")]
    await call(registry, ctx, "iasql_begin")
    assert await call(registry, ctx, "iasql_preview") == []
    # and back to a value record
    r53.change_resource_record_sets(HostedZoneId=zid, ChangeBatch={"Changes": [
        {"Action": "DELETE", "ResourceRecordSet": {"Name": "www.turn.example", "Type": "A", "AliasTarget": aliases(
            aws, "turn.example")[("www.turn.example", "A")]}},
        {"Action": "CREATE", "ResourceRecordSet": {"Name": "www.turn.example", "Type": "A", "TTL": 60,
                                                   "ResourceRecords": [{"Value": "192.0.2.9"}]}}]})
    await call(registry, ctx, "iasql_rollback")
    assert await sql(dsn, "SELECT id, record, ttl, alias_target_id FROM resource_record_set "
                          "WHERE record_type = 'A'") == [(rrs_pk, "192.0.2.9", 60, None)]
    assert await sql(dsn, "SELECT count(*) FROM alias_target") == [(1,)]  # used by nothing, left as it is
