"""Module aws_elb through the engine against a real moto server, checked with boto3 and the tables."""

from __future__ import annotations

import pytest

from engine.rpc import EngineError
from tests.engine.support import call, sql


@pytest.fixture
async def elb_mod(registry, ctx, dsn):
    """aws_elb installed (with aws_vpc and aws_security_group); returns the install rows."""
    rows = await call(registry, ctx, "iasql_install", "aws_elb")
    await sql(dsn, "INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES ('testing', 'testing')")
    return rows


def applied(rows):
    return [(a, t) for a, t, _, d in rows if not d.startswith("synced")]


async def test_install_creates_the_tables(registry, ctx, dsn, elb_mod):
    assert {t: n for _, t, n in elb_mod} == {"target_group": 0, "load_balancer": 0,
                                             "load_balancer_security_groups": 0, "listener": 0}
    cols = await sql(dsn, "SELECT column_name, data_type, column_default FROM information_schema.columns "
                          "WHERE table_name = 'listener' ORDER BY ordinal_position")
    assert [c[0] for c in cols] == ["id", "listener_arn", "port", "protocol", "action_type", "ssl_policy",
                                    "load_balancer_id", "target_group_id", "certificate_id"]
    assert cols[4][2] == "'forward'::listener_action_type_enum"
    # IaSQL's array "foreign key" check: subnets must be known
    await call(registry, ctx, "iasql_begin")
    with pytest.raises(Exception) as ei:
        await sql(dsn, "INSERT INTO load_balancer (load_balancer_name, scheme, load_balancer_type, ip_address_type, "
                       "subnets) VALUES ('x', 'internal', 'application', 'ipv4', '{subnet-nope}')")
    assert "check_load_balancer_subnets" in str(ei.value)
    await call(registry, ctx, "iasql_rollback")
    await call(registry, ctx, "iasql_uninstall", "aws_elb")
    assert await sql(dsn, "SELECT count(*) FROM pg_type WHERE typname LIKE 'load_balancer%' OR typname LIKE "
                          "'target_group%' OR typname LIKE 'listener%'") == [(0,)]


async def test_network_and_load_balancer_in_one_commit_then_update_replace_delete(registry, ctx, dsn, aws, elb_mod):
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO vpc (cidr_block) VALUES ('10.60.0.0/16')")
    await sql(dsn, "INSERT INTO subnet (cidr_block, availability_zone, vpc_id) "
                   "SELECT '10.60.' || n || '.0/24', 'us-east-1' || z, v.id FROM vpc v, "
                   "(VALUES (1, 'a'), (2, 'b')) AS x(n, z) WHERE v.cidr_block = '10.60.0.0/16'")
    await sql(dsn, "INSERT INTO security_group (group_name, description, vpc_id) "
                   "SELECT 'web', 'web sg', id FROM vpc WHERE cidr_block = '10.60.0.0/16'")
    await sql(dsn, "INSERT INTO target_group (target_group_name, target_type, protocol, port, vpc, health_check_path) "
                   "SELECT 'web-tg', 'instance', 'HTTP', 80, id, '/health' FROM vpc WHERE cidr_block = '10.60.0.0/16'")
    await sql(dsn, "INSERT INTO load_balancer (load_balancer_name, scheme, load_balancer_type, ip_address_type, vpc) "
                   "SELECT 'web-lb', 'internet-facing', 'application', 'ipv4', id FROM vpc "
                   "WHERE cidr_block = '10.60.0.0/16'")
    await sql(dsn, "INSERT INTO load_balancer_security_groups (load_balancer_id, security_group_id) "
                   "SELECT l.id, g.id FROM load_balancer l, security_group g WHERE g.group_name = 'web'")
    await sql(dsn, "INSERT INTO listener (port, protocol, load_balancer_id, target_group_id) "
                   "SELECT 80, 'HTTP', l.id, t.id FROM load_balancer l, target_group t")
    [(lb_pk,)] = await sql(dsn, "SELECT id FROM load_balancer")
    [(tg_pk,)] = await sql(dsn, "SELECT id FROM target_group")
    preview = await call(registry, ctx, "iasql_preview")
    assert ("create", "load_balancer", str(lb_pk), "application load balancer web-lb (new) in us-east-1") in preview
    assert ("create", "target_group", str(tg_pk), "target group web-tg (new) in us-east-1") in preview
    assert sorted({(a, t) for a, t, _, _ in preview}) == [
        ("create", "listener"), ("create", "load_balancer"), ("create", "load_balancer_security_groups"),
        ("create", "security_group"), ("create", "subnet"), ("create", "target_group"), ("create", "vpc")]
    elb = aws("elbv2")
    assert elb.describe_load_balancers()["LoadBalancers"] == []  # preview changes nothing

    rows = await call(registry, ctx, "iasql_commit")
    order = [t for _, t in applied(rows)]
    # dependency order across modules: the network first, the listener last
    assert order == ["vpc", "subnet", "subnet", "security_group", "target_group", "load_balancer",
                     "load_balancer_security_groups", "listener"]
    [lb] = elb.describe_load_balancers()["LoadBalancers"]
    [(vpc_id,)] = await sql(dsn, "SELECT vpc_id FROM vpc WHERE cidr_block = '10.60.0.0/16'")
    [(sg_id,)] = await sql(dsn, "SELECT group_id FROM security_group WHERE group_name = 'web'")
    assert (lb["LoadBalancerName"], lb["VpcId"], lb["SecurityGroups"], lb["Scheme"]) == (
        "web-lb", vpc_id, [sg_id], "internet-facing")
    [tg] = elb.describe_target_groups()["TargetGroups"]
    assert (tg["VpcId"], tg["Port"], tg["HealthCheckPath"]) == (vpc_id, 80, "/health")
    [ln] = elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]
    assert ln["DefaultActions"][0]["TargetGroupArn"] == tg["TargetGroupArn"]
    subnet_ids = sorted(r[0] for r in await sql(dsn, "SELECT s.subnet_id FROM subnet s JOIN vpc v ON v.id = s.vpc_id "
                                                     "WHERE v.cidr_block = '10.60.0.0/16'"))
    # the sync filled in what AWS chose
    got = await sql(dsn, "SELECT load_balancer_arn, dns_name, state::text, subnets, availability_zones, vpc "
                         "FROM load_balancer")
    [(arn, dns, state, subnets, zones, vpc_pk)] = got
    assert (arn, dns, state, sorted(subnets), sorted(zones)) == (
        lb["LoadBalancerArn"], lb["DNSName"], "active", subnet_ids, ["us-east-1a", "us-east-1b"])
    assert await sql(dsn, "SELECT listener_arn, action_type::text FROM listener") == [(ln["ListenerArn"], "forward")]
    assert await sql(dsn, "SELECT health_check_interval_seconds IS NOT NULL FROM target_group") == [(True,)]
    attrs = {a["Key"]: a["Value"] for a in (await sql(dsn, "SELECT attributes FROM load_balancer"))[0][0]}
    assert attrs["deletion_protection.enabled"] == "false"  # moto lists fewer attributes than AWS

    # in place: health check, an attribute, the listener's port, another security group
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE target_group SET health_check_path = '/ready', healthy_threshold_count = 3")
    await sql(dsn, """UPDATE load_balancer SET attributes = '[{"Key": "idle_timeout.timeout_seconds", "Value": "120"}]'""")
    await sql(dsn, "UPDATE listener SET port = 8080")
    await sql(dsn, "INSERT INTO security_group (group_name, description, vpc_id) SELECT 'web2', 'second', vpc FROM load_balancer")
    await sql(dsn, "INSERT INTO load_balancer_security_groups (load_balancer_id, security_group_id) "
                   "SELECT l.id, g.id FROM load_balancer l, security_group g WHERE g.group_name = 'web2'")
    rows = await call(registry, ctx, "iasql_commit")
    assert sorted(applied(rows)) == [("create", "load_balancer_security_groups"), ("create", "security_group"),
                                     ("update", "listener"), ("update", "load_balancer"), ("update", "target_group")]
    [lb2] = elb.describe_load_balancers()["LoadBalancers"]
    assert lb2["LoadBalancerArn"] == lb["LoadBalancerArn"] and len(lb2["SecurityGroups"]) == 2
    [tg2] = elb.describe_target_groups()["TargetGroups"]
    assert (tg2["TargetGroupArn"], tg2["HealthCheckPath"], tg2["HealthyThresholdCount"]) == (
        tg["TargetGroupArn"], "/ready", 3)
    assert [x["Port"] for x in elb.describe_listeners(LoadBalancerArn=arn)["Listeners"]] == [8080]
    got = elb.describe_load_balancer_attributes(LoadBalancerArn=arn)["Attributes"]
    assert {"Key": "idle_timeout.timeout_seconds", "Value": "120"} in got
    # the row now lists every attribute AWS has
    assert len((await sql(dsn, "SELECT attributes FROM load_balancer"))[0][0]) == len(got)

    # a security group taken off the load balancer
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "DELETE FROM load_balancer_security_groups WHERE security_group_id = "
                   "(SELECT id FROM security_group WHERE group_name = 'web2')")
    rows = await call(registry, ctx, "iasql_commit")
    assert applied(rows) == [("delete", "load_balancer_security_groups")]
    assert elb.describe_load_balancers()["LoadBalancers"][0]["SecurityGroups"] == [sg_id]

    # a scheme change replaces the load balancer; its listener is created again on the replacement
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE load_balancer SET scheme = 'internal'")
    assert [(a, t) for a, t, _, _ in await call(registry, ctx, "iasql_preview")] == [("replace", "load_balancer")]
    rows = await call(registry, ctx, "iasql_commit")
    assert applied(rows) == [("replace", "load_balancer")]
    [lb3] = elb.describe_load_balancers()["LoadBalancers"]
    assert lb3["LoadBalancerArn"] != arn and lb3["Scheme"] == "internal" and lb3["SecurityGroups"] == [sg_id]
    [ln3] = elb.describe_listeners(LoadBalancerArn=lb3["LoadBalancerArn"])["Listeners"]
    assert ln3["Port"] == 8080
    assert await sql(dsn, "SELECT l.listener_arn, b.load_balancer_arn FROM listener l "
                          "JOIN load_balancer b ON b.id = l.load_balancer_id") == [
        (ln3["ListenerArn"], lb3["LoadBalancerArn"])]
    assert await sql(dsn, "SELECT count(*) FROM load_balancer_security_groups") == [(1,)]

    # a port change replaces a target group no listener uses; the listener moves to it in place
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO target_group (target_group_name, target_type, protocol, port, vpc) "
                   "SELECT 'other-tg', 'instance', 'HTTP', 81, vpc FROM target_group")
    await call(registry, ctx, "iasql_commit")
    [(other_arn,)] = await sql(dsn, "SELECT target_group_arn FROM target_group WHERE target_group_name = 'other-tg'")
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE target_group SET port = 82 WHERE target_group_name = 'other-tg'")
    await sql(dsn, "UPDATE listener SET target_group_id = (SELECT id FROM target_group WHERE target_group_name = 'web-tg')")
    rows = await call(registry, ctx, "iasql_commit")
    assert applied(rows) == [("replace", "target_group")]
    [(new_arn, port)] = await sql(dsn, "SELECT target_group_arn, port FROM target_group WHERE target_group_name = 'other-tg'")
    assert new_arn != other_arn and port == 82
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE listener SET target_group_id = (SELECT id FROM target_group WHERE target_group_name = 'other-tg')")
    assert applied(await call(registry, ctx, "iasql_commit")) == [("update", "listener")]
    [ln4] = elb.describe_listeners(LoadBalancerArn=lb3["LoadBalancerArn"])["Listeners"]
    assert ln4["DefaultActions"][0]["TargetGroupArn"] == new_arn and ln4["ListenerArn"] == ln3["ListenerArn"]

    # a target group a listener uses cannot be replaced: AWS refuses, the commit is reverted
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE target_group SET port = 83 WHERE target_group_name = 'other-tg'")
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "iasql_commit")
    assert ei.value.sqlstate == "58000" and "ResourceInUse" in ei.value.message
    assert {t["Port"] for t in elb.describe_target_groups()["TargetGroups"]} == {80, 82}

    # delete everything (the listener before what it references, as the foreign keys ask)
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "DELETE FROM listener; DELETE FROM load_balancer; DELETE FROM target_group")
    rows = await call(registry, ctx, "iasql_commit")
    assert sorted({a for a, t in applied(rows)}) == ["delete"]
    # the join rows went with the load balancer's row (cascade) and its groups with it in the cloud
    assert [t for _, t in applied(rows)] == ["listener", "load_balancer", "target_group", "target_group"]
    assert elb.describe_load_balancers()["LoadBalancers"] == []
    assert elb.describe_target_groups()["TargetGroups"] == []
    assert await sql(dsn, "SELECT count(*) FROM load_balancer_security_groups") == [(0,)]


async def _make_in_cloud(aws, region="us-east-1", name="imp"):
    """A target group, a load balancer on the default VPC's subnets and a listener, made with boto3."""
    ec2, elb = aws("ec2", region), aws("elbv2", region)
    [vpc] = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    subnets = [s["SubnetId"] for s in ec2.describe_subnets(
        Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["Subnets"]][:2]
    [sg] = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]},
                                                 {"Name": "group-name", "Values": ["default"]}])["SecurityGroups"]
    tg = elb.create_target_group(Name=f"{name}-tg", Protocol="HTTP", Port=80, VpcId=vpc["VpcId"],
                                 TargetType="ip")["TargetGroups"][0]
    lb = elb.create_load_balancer(Name=f"{name}-lb", Subnets=subnets, SecurityGroups=[sg["GroupId"]],
                                  Scheme="internal", Type="application")["LoadBalancers"][0]
    ln = elb.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=80,
                             DefaultActions=[{"Type": "forward", "TargetGroupArn": tg["TargetGroupArn"]}])["Listeners"][0]
    return tg, lb, ln, sg, subnets


async def test_import_at_install_and_drift_through_rollback(registry, ctx, dsn, aws):
    tg, lb, ln, sg, subnets = await _make_in_cloud(aws)
    rows = await call(registry, ctx, "iasql_install", "aws_elb")
    await sql(dsn, "INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES ('testing', 'testing')")
    assert {t: n for _, t, n in rows} == {"target_group": 1, "load_balancer": 1,
                                          "load_balancer_security_groups": 1, "listener": 1}
    assert await sql(dsn, "SELECT t.target_group_arn, t.target_type::text, v.is_default FROM target_group t "
                          "JOIN vpc v ON v.id = t.vpc") == [(tg["TargetGroupArn"], "ip", True)]
    [(name, scheme, got_subnets)] = await sql(dsn, "SELECT load_balancer_name, scheme::text, subnets FROM load_balancer")
    assert (name, scheme, sorted(got_subnets)) == ("imp-lb", "internal", sorted(subnets))
    assert await sql(dsn, "SELECT g.group_id FROM load_balancer_security_groups j "
                          "JOIN security_group g ON g.id = j.security_group_id") == [(sg["GroupId"],)]
    assert await sql(dsn, "SELECT listener_arn, port FROM listener") == [(ln["ListenerArn"], 80)]

    # drift: health check and listener port changed in the cloud, a second load balancer made there
    elb = aws("elbv2")
    elb.modify_target_group(TargetGroupArn=tg["TargetGroupArn"], HealthCheckPath="/drift")
    elb.modify_listener(ListenerArn=ln["ListenerArn"], Port=81)
    await call(registry, ctx, "iasql_begin")
    preview = await call(registry, ctx, "iasql_preview")
    assert sorted((a, t, i) for a, t, i, _ in preview) == [("update", "listener", ln["ListenerArn"]),
                                                          ("update", "target_group", tg["TargetGroupArn"])]
    rows = await call(registry, ctx, "iasql_rollback")
    assert sorted((a, t) for a, t, _, _ in rows) == [("update", "listener"), ("update", "target_group")]
    assert await sql(dsn, "SELECT health_check_path FROM target_group") == [("/drift",)]
    assert await sql(dsn, "SELECT port FROM listener") == [(81,)]

    # a listener deleted in the cloud goes from the table; a new one comes in
    elb.delete_listener(ListenerArn=ln["ListenerArn"])
    ln2 = elb.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=90,
                              DefaultActions=[{"Type": "forward", "TargetGroupArn": tg["TargetGroupArn"]}])["Listeners"][0]
    await call(registry, ctx, "iasql_begin")
    rows = await call(registry, ctx, "iasql_rollback")
    assert sorted((a, t, i) for a, t, i, _ in rows) == [("create", "listener", ln2["ListenerArn"]),
                                                       ("delete", "listener", ln["ListenerArn"])]
    # a user change in the database is put back by rollback too
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE target_group SET health_check_path = '/mine'")
    await call(registry, ctx, "iasql_rollback")
    assert await sql(dsn, "SELECT health_check_path FROM target_group") == [("/drift",)]
    assert elb.describe_target_groups()["TargetGroups"][0]["HealthCheckPath"] == "/drift"


async def test_two_regions(registry, ctx, dsn, aws, elb_mod):
    await sql(dsn, "UPDATE aws_regions SET is_enabled = true WHERE region = 'eu-west-1'")
    tg, lb, ln, _, _ = await _make_in_cloud(aws, "eu-west-1", "eu")
    await call(registry, ctx, "iasql_begin")
    rows = await call(registry, ctx, "iasql_rollback")
    assert {("create", t) for t in ("target_group", "load_balancer", "listener")} <= {(a, t) for a, t, _, _ in rows}
    assert await sql(dsn, "SELECT load_balancer_name, region FROM load_balancer") == [("eu-lb", "eu-west-1")]
    # a target group (NULL vpc: the region's default VPC) in each region, in one commit
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO target_group (target_group_name, target_type, protocol, port, region) VALUES "
                   "('us-tg', 'instance', 'HTTP', 80, 'us-east-1'), ('eu2-tg', 'instance', 'HTTP', 80, 'eu-west-1')")
    await call(registry, ctx, "iasql_commit")
    assert [t["TargetGroupName"] for t in aws("elbv2").describe_target_groups()["TargetGroups"]] == ["us-tg"]
    assert sorted(t["TargetGroupName"] for t in aws("elbv2", "eu-west-1").describe_target_groups()["TargetGroups"]) == [
        "eu-tg", "eu2-tg"]
    got = await sql(dsn, "SELECT t.target_group_name, v.region, v.is_default FROM target_group t "
                         "JOIN vpc v ON v.id = t.vpc ORDER BY 1")
    assert got == [("eu-tg", "eu-west-1", True), ("eu2-tg", "eu-west-1", True), ("us-tg", "us-east-1", True)]
    # disabling a region leaves its rows alone
    await sql(dsn, "UPDATE aws_regions SET is_enabled = false WHERE region = 'eu-west-1'")
    await call(registry, ctx, "iasql_begin")
    await call(registry, ctx, "iasql_rollback")
    assert await sql(dsn, "SELECT count(*) FROM load_balancer WHERE region = 'eu-west-1'") == [(1,)]


async def test_subnet_named_by_a_load_balancer_cannot_be_deleted(registry, ctx, dsn, aws, elb_mod):
    _, _, _, _, subnets = await _make_in_cloud(aws)
    await call(registry, ctx, "iasql_begin")
    await call(registry, ctx, "iasql_rollback")
    await call(registry, ctx, "iasql_begin")
    with pytest.raises(Exception) as ei:
        await sql(dsn, "DELETE FROM subnet WHERE subnet_id = %s", (subnets[0],))
    assert "is being used by load balancer imp-lb" in str(ei.value)
    # other updates of that subnet row are fine (the engine's sync writes them)
    await sql(dsn, "UPDATE subnet SET available_ip_address_count = 1 WHERE subnet_id = %s", (subnets[0],))
    await call(registry, ctx, "iasql_rollback")


async def test_readme_example_in_the_default_vpc(registry, ctx, dsn, aws, elb_mod):
    """README "## Modules": NULL vpc and subnets mean the default VPC and its subnets."""
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO security_group (group_name, description) VALUES ('web', 'web')")
    await sql(dsn, "INSERT INTO target_group (target_group_name, target_type, protocol, port) "
                   "VALUES ('web-tg', 'instance', 'HTTP', 80)")
    await sql(dsn, "INSERT INTO load_balancer (load_balancer_name, scheme, load_balancer_type, ip_address_type) "
                   "VALUES ('web-lb', 'internet-facing', 'application', 'ipv4')")
    await sql(dsn, "INSERT INTO load_balancer_security_groups (load_balancer_id, security_group_id) "
                   "SELECT l.id, g.id FROM load_balancer l, security_group g WHERE g.group_name = 'web'")
    await sql(dsn, "INSERT INTO listener (port, protocol, load_balancer_id, target_group_id) "
                   "SELECT 80, 'HTTP', l.id, t.id FROM load_balancer l, target_group t")
    rows = await call(registry, ctx, "iasql_commit")
    assert [t for _, t in applied(rows)] == ["security_group", "target_group", "load_balancer",
                                             "load_balancer_security_groups", "listener"]
    ec2 = aws("ec2")
    [vpc] = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    default_subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["Subnets"]
    [lb] = aws("elbv2").describe_load_balancers()["LoadBalancers"]
    assert lb["VpcId"] == vpc["VpcId"] and len(lb["AvailabilityZones"]) == len(default_subnets)
    assert await sql(dsn, "SELECT v.is_default FROM load_balancer l JOIN vpc v ON v.id = l.vpc "
                          "UNION ALL SELECT v.is_default FROM target_group t JOIN vpc v ON v.id = t.vpc") == [
        (True,), (True,)]
    # the rows now hold what AWS chose, and a second commit has nothing to do
    await call(registry, ctx, "iasql_begin")
    assert await call(registry, ctx, "iasql_preview") == []
    assert applied(await call(registry, ctx, "iasql_commit")) == []


async def test_https_listener_with_a_certificate_row(registry, ctx, dsn, aws, elb_mod):
    """``certificate_id`` references aws_acm's ``certificate``: a certificate made in moto's ACM
    comes in with iasql_rollback, and an HTTPS listener naming its row is created with its ARN."""
    acm = aws("acm")
    cert_arn = acm.request_certificate(DomainName="example.com")["CertificateArn"]
    await call(registry, ctx, "iasql_begin")
    await call(registry, ctx, "iasql_rollback")  # the certificate row comes in from the cloud
    assert await sql(dsn, "SELECT arn FROM certificate") == [(cert_arn,)]
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO target_group (target_group_name, target_type, protocol, port) "
                   "VALUES ('tls-tg', 'ip', 'HTTP', 80)")
    await sql(dsn, "INSERT INTO load_balancer (load_balancer_name, scheme, load_balancer_type, ip_address_type) "
                   "VALUES ('tls-lb', 'internet-facing', 'application', 'ipv4')")
    await sql(dsn, "INSERT INTO listener (port, protocol, load_balancer_id, target_group_id, certificate_id) "
                   "SELECT 443, 'HTTPS', l.id, t.id, c.id FROM load_balancer l, target_group t, certificate c")
    await call(registry, ctx, "iasql_commit")
    [lb] = aws("elbv2").describe_load_balancers()["LoadBalancers"]
    [ln] = aws("elbv2").describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]
    assert (ln["Protocol"], ln["SslPolicy"], [c["CertificateArn"] for c in ln["Certificates"]]) == (
        "HTTPS", "ELBSecurityPolicy-2016-08", [cert_arn])  # IaSQL's default policy
    assert await sql(dsn, "SELECT l.ssl_policy, c.arn FROM listener l JOIN certificate c ON c.id = l.certificate_id") == [
        ("ELBSecurityPolicy-2016-08", cert_arn)]
    await call(registry, ctx, "iasql_begin")
    assert await call(registry, ctx, "iasql_preview") == []  # read back as it was written


async def test_failed_listener_takes_back_the_new_load_balancer(registry, ctx, dsn, aws, elb_mod):
    await sql(dsn, "UPDATE aws_regions SET is_enabled = true WHERE region = 'eu-west-1'")
    await call(registry, ctx, "iasql_begin")
    await call(registry, ctx, "iasql_rollback")  # eu-west-1's default VPC comes in
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO target_group (target_group_name, target_type, protocol, port, region) "
                   "VALUES ('far-tg', 'instance', 'HTTP', 80, 'eu-west-1')")
    await sql(dsn, "INSERT INTO load_balancer (load_balancer_name, scheme, load_balancer_type, ip_address_type) "
                   "VALUES ('near-lb', 'internal', 'application', 'ipv4')")
    await sql(dsn, "INSERT INTO listener (port, protocol, load_balancer_id, target_group_id) "
                   "SELECT 80, 'HTTP', l.id, t.id FROM load_balancer l, target_group t")
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "iasql_commit")
    assert ei.value.sqlstate == "58000"
    assert "Target group and load balancer are not from the same region" in ei.value.message
    # the commit's creates are taken back, the tables are as before iasql_begin
    assert aws("elbv2").describe_load_balancers()["LoadBalancers"] == []
    assert aws("elbv2", "eu-west-1").describe_target_groups()["TargetGroups"] == []
    assert await sql(dsn, "SELECT (SELECT count(*) FROM load_balancer) + (SELECT count(*) FROM target_group) "
                          "+ (SELECT count(*) FROM listener)") == [(0,)]


async def test_subnets_and_ip_address_type_change_in_place(registry, ctx, dsn, aws, elb_mod):
    subnets = [r[0] for r in await sql(dsn, "SELECT subnet_id FROM subnet ORDER BY availability_zone LIMIT 3")]
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO load_balancer (load_balancer_name, scheme, load_balancer_type, ip_address_type, subnets) "
                   "VALUES ('net-lb', 'internal', 'network', 'ipv4', %s)", (subnets[:2],))
    await call(registry, ctx, "iasql_commit")
    elb = aws("elbv2")
    [lb] = elb.describe_load_balancers()["LoadBalancers"]
    assert (lb["Type"], sorted(z["SubnetId"] for z in lb["AvailabilityZones"])) == ("network", sorted(subnets[:2]))
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE load_balancer SET subnets = %s, ip_address_type = 'dualstack'", (subnets,))
    rows = await call(registry, ctx, "iasql_commit")
    assert applied(rows) == [("update", "load_balancer")]
    [lb2] = elb.describe_load_balancers()["LoadBalancers"]
    assert lb2["LoadBalancerArn"] == lb["LoadBalancerArn"] and lb2["IpAddressType"] == "dualstack"
    assert sorted(z["SubnetId"] for z in lb2["AvailabilityZones"]) == sorted(subnets)
    [(got,)] = await sql(dsn, "SELECT subnets FROM load_balancer")
    assert sorted(got) == sorted(subnets)
