"""aws_vpc's dhcp_options, network_acl, peering_connection and endpoint_interface(_subnets) tables
through the engine against a real moto server, checked with boto3 and the tables."""

from __future__ import annotations

import json

import pytest

from engine.rpc import EngineError
from tests.engine.support import call, sql


@pytest.fixture
async def vpc_mod(registry, ctx, dsn):
    """aws_vpc installed (the default VPC imported); returns the install rows."""
    rows = await call(registry, ctx, "iasql_install", "aws_vpc")
    await sql(dsn, "INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES ('testing', 'testing')")
    return rows


def vpc_of(aws, cidr, region="us-east-1"):
    [v] = aws("ec2", region).describe_vpcs(Filters=[{"Name": "cidr-block", "Values": [cidr]}])["Vpcs"]
    return v


def applied(rows):
    return [(a, t) for a, t, _, d in rows if not d.startswith("synced")]


DOMAIN = [{"Key": "domain-name", "Values": [{"Value": "iasql.test"}]}]


async def test_dhcp_options_with_a_vpc_in_one_commit(registry, ctx, dsn, aws, vpc_mod):
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO dhcp_options (dhcp_configurations, tags) VALUES (%s, '{\"Name\": \"dns\"}')",
              (json.dumps(DOMAIN),))
    await sql(dsn, "INSERT INTO vpc (cidr_block, dhcp_options_id) SELECT '10.50.0.0/16', id FROM dhcp_options")
    preview = await call(registry, ctx, "iasql_preview")
    [(dopt_pk,)] = await sql(dsn, "SELECT id FROM dhcp_options")
    assert ("create", "dhcp_options", str(dopt_pk), "DHCP options new in us-east-1") in preview
    assert sorted((a, t) for a, t, _, _ in preview) == [("create", "dhcp_options"), ("create", "vpc")]
    rows = await call(registry, ctx, "iasql_commit")
    assert applied(rows) == [("create", "dhcp_options"), ("create", "vpc")]  # dependency order
    ec2 = aws("ec2")
    [dopt] = ec2.describe_dhcp_options()["DhcpOptions"]
    assert dopt["DhcpConfigurations"] == [{"Key": "domain-name", "Values": [{"Value": "iasql.test"}]}]
    assert dopt["Tags"] == [{"Key": "Name", "Value": "dns"}]
    assert vpc_of(aws, "10.50.0.0/16")["DhcpOptionsId"] == dopt["DhcpOptionsId"]
    assert await sql(dsn, "SELECT d.dhcp_options_id FROM vpc v JOIN dhcp_options d ON d.id = v.dhcp_options_id") == [
        (dopt["DhcpOptionsId"],)]

    # tags in place; a new configuration cannot be applied (AWS has no call): the cloud's comes back
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, """UPDATE dhcp_options SET tags = '{"Name": "dns2"}',
                      dhcp_configurations = '[{"Key": "domain-name", "Values": [{"Value": "other.test"}]}]'""")
    rows = await call(registry, ctx, "iasql_commit")
    assert applied(rows) == [("update", "dhcp_options")]
    assert ("update", "dhcp_options", dopt["DhcpOptionsId"],
            f"synced from cloud: DHCP options {dopt['DhcpOptionsId']} in us-east-1") in rows
    [dopt2] = ec2.describe_dhcp_options()["DhcpOptions"]
    assert dopt2["DhcpOptionsId"] == dopt["DhcpOptionsId"] and dopt2["Tags"] == [{"Key": "Name", "Value": "dns2"}]
    assert dopt2["DhcpConfigurations"] == dopt["DhcpConfigurations"]
    [(configs,)] = await sql(dsn, "SELECT dhcp_configurations::text FROM dhcp_options")
    assert json.loads(configs) == DOMAIN

    # the VPC back on no options, the set deleted
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE vpc SET dhcp_options_id = NULL WHERE dhcp_options_id IS NOT NULL")
    await sql(dsn, "DELETE FROM dhcp_options")
    # the VPC goes back to no options first (an update, before the delete)
    assert sorted((a, t) for a, t, _, _ in await call(registry, ctx, "iasql_preview")) == [
        ("delete", "dhcp_options"), ("update", "vpc")]
    rows = await call(registry, ctx, "iasql_commit")
    assert applied(rows) == [("update", "vpc"), ("delete", "dhcp_options")]
    assert vpc_of(aws, "10.50.0.0/16")["DhcpOptionsId"] == "default"
    assert ec2.describe_dhcp_options()["DhcpOptions"] == []


async def test_dhcp_options_in_use_cannot_be_deleted(registry, ctx, dsn, aws, vpc_mod):
    ec2 = aws("ec2")
    dopt = ec2.create_dhcp_options(DhcpConfigurations=[{"Key": "domain-name", "Values": ["a.test"]}])["DhcpOptions"]
    vpc = ec2.create_vpc(CidrBlock="10.51.0.0/16")["Vpc"]
    ec2.associate_dhcp_options(DhcpOptionsId=dopt["DhcpOptionsId"], VpcId=vpc["VpcId"])
    await call(registry, ctx, "iasql_begin")
    rows = await call(registry, ctx, "iasql_rollback")  # import
    assert ("create", "dhcp_options", dopt["DhcpOptionsId"]) in {(a, t, i) for a, t, i, _ in rows}
    assert await sql(dsn, "SELECT v.vpc_id FROM vpc v JOIN dhcp_options d ON d.id = v.dhcp_options_id") == [
        (vpc["VpcId"],)]
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "ALTER TABLE vpc DROP CONSTRAINT \"FK_cd834c0377f2390d05341b7a883\"")  # as a user could not
    await sql(dsn, "DELETE FROM dhcp_options")
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "iasql_commit")
    assert "DependencyViolation" in ei.value.message, ei.value.message
    assert [d["DhcpOptionsId"] for d in ec2.describe_dhcp_options()["DhcpOptions"]] == [dopt["DhcpOptionsId"]]


async def test_network_acl_and_subnet_in_one_commit_update_replace_delete(registry, ctx, dsn, aws, vpc_mod):
    entries = [{"RuleNumber": 100, "Protocol": "6", "RuleAction": "allow", "Egress": False,
                "CidrBlock": "10.0.0.0/8", "PortRange": {"From": 443, "To": 443}}]
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO vpc (cidr_block) VALUES ('10.60.0.0/16'), ('10.61.0.0/16')")
    await sql(dsn, """INSERT INTO network_acl (vpc_id, entries, tags) SELECT id, %s, '{"Name": "web"}' FROM vpc
                      WHERE cidr_block = '10.60.0.0/16'""", (json.dumps(entries),))
    await sql(dsn, "INSERT INTO subnet (cidr_block, availability_zone, vpc_id, network_acl_id) "
                   "SELECT '10.60.1.0/24', 'us-east-1a', v.id, a.id FROM vpc v JOIN network_acl a ON a.vpc_id = v.id")
    preview = await call(registry, ctx, "iasql_preview")
    assert sorted((a, t) for a, t, _, _ in preview) == [
        ("create", "network_acl"), ("create", "subnet"), ("create", "vpc"), ("create", "vpc")]
    rows = await call(registry, ctx, "iasql_commit")
    assert applied(rows) == [("create", "vpc"), ("create", "vpc"), ("create", "network_acl"), ("create", "subnet")]
    ec2 = aws("ec2")
    vpc = vpc_of(aws, "10.60.0.0/16")
    [acl] = ec2.describe_network_acls(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]},
                                               {"Name": "default", "Values": ["false"]}])["NetworkAcls"]
    [subnet] = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["Subnets"]
    assert [a["SubnetId"] for a in acl["Associations"]] == [subnet["SubnetId"]]
    assert {(e["RuleNumber"], e["Egress"], e["RuleAction"]) for e in acl["Entries"]} >= {(100, False, "allow")}
    assert acl["Tags"] == [{"Key": "Name", "Value": "web"}]
    assert await sql(dsn, "SELECT a.network_acl_id, s.subnet_id FROM subnet s JOIN network_acl a ON a.id = s.network_acl_id") == [
        (acl["NetworkAclId"], subnet["SubnetId"])]
    # the default ACLs are not rows
    assert await sql(dsn, "SELECT count(*) FROM network_acl") == [(1,)]
    await call(registry, ctx, "iasql_begin")
    assert await call(registry, ctx, "iasql_preview") == []  # the sync's entries (with AWS's rules) compare equal

    # rules and tags in place; the subnet back on its VPC's default ACL, in place
    entries2 = [{"RuleNumber": 110, "Protocol": "-1", "RuleAction": "deny", "Egress": True, "CidrBlock": "0.0.0.0/0"}]
    await sql(dsn, """UPDATE network_acl SET entries = %s, tags = '{"Name": "web2"}'""", (json.dumps(entries2),))
    await sql(dsn, "UPDATE subnet SET network_acl_id = NULL WHERE network_acl_id IS NOT NULL")
    rows = await call(registry, ctx, "iasql_commit")
    assert sorted(applied(rows)) == [("update", "network_acl"), ("update", "subnet")]
    [acl2] = ec2.describe_network_acls(NetworkAclIds=[acl["NetworkAclId"]])["NetworkAcls"]
    assert {(e["RuleNumber"], e["Egress"], e["RuleAction"]) for e in acl2["Entries"] if e["RuleNumber"] < 32767} == {
        (110, True, "deny")}
    assert acl2["Associations"] == [] and acl2["Tags"] == [{"Key": "Name", "Value": "web2"}]
    [default_acl] = ec2.describe_network_acls(Filters=[{"Name": "association.subnet-id", "Values": [subnet["SubnetId"]]}])[
        "NetworkAcls"]
    assert default_acl["IsDefault"] and default_acl["VpcId"] == vpc["VpcId"]
    assert ec2.describe_subnets(SubnetIds=[subnet["SubnetId"]])["Subnets"]  # not replaced

    # a new VPC replaces the ACL
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE network_acl SET vpc_id = (SELECT id FROM vpc WHERE cidr_block = '10.61.0.0/16')")
    rows = await call(registry, ctx, "iasql_commit")
    assert applied(rows) == [("replace", "network_acl")]
    other = vpc_of(aws, "10.61.0.0/16")
    [(new_acl,)] = await sql(dsn, "SELECT network_acl_id FROM network_acl")
    [acl3] = ec2.describe_network_acls(NetworkAclIds=[new_acl])["NetworkAcls"]
    assert acl3["VpcId"] == other["VpcId"] and new_acl != acl["NetworkAclId"]
    assert {e["RuleNumber"] for e in acl3["Entries"] if e["RuleNumber"] < 32767} == {110}

    # delete
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "DELETE FROM network_acl")
    rows = await call(registry, ctx, "iasql_commit")
    assert applied(rows) == [("delete", "network_acl")]
    assert ec2.describe_network_acls(Filters=[{"Name": "default", "Values": ["false"]}])["NetworkAcls"] == []


async def test_peering_connection_two_vpcs_in_one_commit_and_across_regions(registry, ctx, dsn, aws, vpc_mod):
    await sql(dsn, "UPDATE aws_regions SET is_enabled = true WHERE region = 'eu-west-1'")
    await call(registry, ctx, "iasql_begin")
    await call(registry, ctx, "iasql_rollback")
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO vpc (cidr_block) VALUES ('10.70.0.0/16'), ('10.71.0.0/16')")
    await sql(dsn, """INSERT INTO peering_connection (requester_id, accepter_id, tags)
                      SELECT r.id, a.id, '{"Name": "p1"}' FROM vpc r, vpc a
                      WHERE r.cidr_block = '10.70.0.0/16' AND a.cidr_block = '10.71.0.0/16'""")
    preview = await call(registry, ctx, "iasql_preview")
    assert sorted((a, t) for a, t, _, _ in preview) == [
        ("create", "peering_connection"), ("create", "vpc"), ("create", "vpc")]
    rows = await call(registry, ctx, "iasql_commit")
    assert applied(rows) == [("create", "vpc"), ("create", "vpc"), ("create", "peering_connection")]
    ec2 = aws("ec2")
    a, b = vpc_of(aws, "10.70.0.0/16"), vpc_of(aws, "10.71.0.0/16")
    [pcx] = [p for p in ec2.describe_vpc_peering_connections()["VpcPeeringConnections"]
             if p["Status"]["Code"] == "active"]
    assert (pcx["RequesterVpcInfo"]["VpcId"], pcx["AccepterVpcInfo"]["VpcId"]) == (a["VpcId"], b["VpcId"])
    assert await sql(dsn, "SELECT peering_connection_id, state::text, tags::text FROM peering_connection") == [
        (pcx["VpcPeeringConnectionId"], "active", '{"Name": "p1"}')]
    # a route to the other VPC through the connection in each VPC's (main) route table, synced in
    for vpc, other in ((a, b), (b, a)):
        [rt] = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["RouteTables"]
        assert {(r.get("DestinationCidrBlock"), r.get("VpcPeeringConnectionId")) for r in rt["Routes"]} >= {
            (other["CidrBlock"], pcx["VpcPeeringConnectionId"])}
    assert await sql(dsn, "SELECT destination FROM route WHERE vpc_peering_connection_id = %s ORDER BY 1",
                     (pcx["VpcPeeringConnectionId"],)) == [("10.70.0.0/16",), ("10.71.0.0/16",)]

    # tags in place
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, """UPDATE peering_connection SET tags = '{"Name": "p2"}'""")
    rows = await call(registry, ctx, "iasql_commit")
    assert applied(rows) == [("update", "peering_connection")]
    [p] = ec2.describe_vpc_peering_connections(VpcPeeringConnectionIds=[pcx["VpcPeeringConnectionId"]])[
        "VpcPeeringConnections"]
    assert p["Tags"] == [{"Key": "Name", "Value": "p2"}]

    # a new accepter in another region replaces the connection
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO vpc (cidr_block, region) VALUES ('10.72.0.0/16', 'eu-west-1')")
    await call(registry, ctx, "iasql_commit")
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE peering_connection SET accepter_id = (SELECT id FROM vpc WHERE cidr_block = '10.72.0.0/16')")
    rows = await call(registry, ctx, "iasql_commit")
    assert applied(rows) == [("replace", "peering_connection")]
    eu = vpc_of(aws, "10.72.0.0/16", "eu-west-1")
    [(new_pcx,)] = await sql(dsn, "SELECT peering_connection_id FROM peering_connection")
    assert new_pcx != pcx["VpcPeeringConnectionId"]
    [p] = ec2.describe_vpc_peering_connections(VpcPeeringConnectionIds=[new_pcx])["VpcPeeringConnections"]
    assert (p["AccepterVpcInfo"]["VpcId"], p["AccepterVpcInfo"]["Region"], p["Status"]["Code"]) == (
        eu["VpcId"], "eu-west-1", "active")
    [old] = ec2.describe_vpc_peering_connections(VpcPeeringConnectionIds=[pcx["VpcPeeringConnectionId"]])[
        "VpcPeeringConnections"]
    assert old["Status"]["Code"] == "deleted"

    # delete
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "DELETE FROM peering_connection")
    rows = await call(registry, ctx, "iasql_commit")
    assert applied(rows) == [("delete", "peering_connection")]
    [p] = ec2.describe_vpc_peering_connections(VpcPeeringConnectionIds=[new_pcx])["VpcPeeringConnections"]
    assert p["Status"]["Code"] == "deleted"
    assert await sql(dsn, "SELECT count(*) FROM peering_connection") == [(0,)]


async def test_endpoint_interface_with_subnets_in_one_commit(registry, ctx, dsn, aws, vpc_mod):
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO vpc (cidr_block) VALUES ('10.80.0.0/16')")
    await sql(dsn, "INSERT INTO subnet (cidr_block, availability_zone, vpc_id) SELECT c, z, v.id FROM vpc v, "
                   "(VALUES ('10.80.1.0/24', 'us-east-1a'), ('10.80.2.0/24', 'us-east-1b')) AS s(c, z) "
                   "WHERE v.cidr_block = '10.80.0.0/16'")
    await sql(dsn, """INSERT INTO endpoint_interface (service, vpc_id, tags) SELECT 'lambda', id, '{"Name": "e1"}'
                      FROM vpc WHERE cidr_block = '10.80.0.0/16'""")
    await sql(dsn, "INSERT INTO endpoint_interface_subnets (endpoint_interface_id, subnet_id) "
                   "SELECT e.id, s.id FROM endpoint_interface e, subnet s WHERE s.cidr_block = '10.80.1.0/24'")
    preview = await call(registry, ctx, "iasql_preview")
    assert sorted((a, t) for a, t, _, _ in preview) == [
        ("create", "endpoint_interface"), ("create", "endpoint_interface_subnets"), ("create", "subnet"),
        ("create", "subnet"), ("create", "vpc")]
    rows = await call(registry, ctx, "iasql_commit")
    assert [t for _, t in applied(rows)][:4] == ["vpc", "subnet", "subnet", "endpoint_interface"]
    ec2 = aws("ec2")
    vpc = vpc_of(aws, "10.80.0.0/16")
    subnets = {s["CidrBlock"]: s["SubnetId"] for s in ec2.describe_subnets(
        Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["Subnets"]}
    [ep] = ec2.describe_vpc_endpoints(Filters=[{"Name": "vpc-endpoint-type", "Values": ["Interface"]}])["VpcEndpoints"]
    assert ep["ServiceName"] == "com.amazonaws.us-east-1.lambda" and ep["SubnetIds"] == [subnets["10.80.1.0/24"]]
    assert ep["Tags"] == [{"Key": "Name", "Value": "e1"}] and ep["PrivateDnsEnabled"] is False
    assert await sql(dsn, "SELECT vpc_endpoint_id, service::text, private_dns_enabled FROM endpoint_interface") == [
        (ep["VpcEndpointId"], "lambda", False)]
    await call(registry, ctx, "iasql_begin")
    assert await call(registry, ctx, "iasql_preview") == []

    # a second subnet joins, the first leaves; the policy and tags change in place
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "lambda:*",
                                                       "Resource": "*"}]}
    await sql(dsn, "DELETE FROM endpoint_interface_subnets")
    await sql(dsn, "INSERT INTO endpoint_interface_subnets (endpoint_interface_id, subnet_id) "
                   "SELECT e.id, s.id FROM endpoint_interface e, subnet s WHERE s.cidr_block = '10.80.2.0/24'")
    await sql(dsn, """UPDATE endpoint_interface SET policy = %s, tags = '{"Name": "e2"}'""", (json.dumps(policy),))
    rows = await call(registry, ctx, "iasql_commit")
    assert sorted(applied(rows)) == [("create", "endpoint_interface_subnets"), ("delete", "endpoint_interface_subnets"),
                                     ("update", "endpoint_interface")]
    [ep2] = ec2.describe_vpc_endpoints(VpcEndpointIds=[ep["VpcEndpointId"]])["VpcEndpoints"]
    assert ep2["SubnetIds"] == [subnets["10.80.2.0/24"]] and json.loads(ep2["PolicyDocument"]) == policy
    assert ep2["Tags"] == [{"Key": "Name", "Value": "e2"}]

    # a new service replaces the endpoint, on the same subnets
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE endpoint_interface SET service = 'logs'")
    rows = await call(registry, ctx, "iasql_commit")
    assert applied(rows)[:1] == [("replace", "endpoint_interface")]
    [(new_id,)] = await sql(dsn, "SELECT vpc_endpoint_id FROM endpoint_interface")
    [ep3] = ec2.describe_vpc_endpoints(VpcEndpointIds=[new_id])["VpcEndpoints"]
    assert new_id != ep["VpcEndpointId"] and ep3["ServiceName"] == "com.amazonaws.us-east-1.logs"
    assert ep3["SubnetIds"] == [subnets["10.80.2.0/24"]]

    # without join rows the endpoint takes every subnet of its VPC, and the sync writes them in
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, """INSERT INTO endpoint_interface (service, vpc_id) SELECT 'ecr', id FROM vpc
                      WHERE cidr_block = '10.80.0.0/16'""")
    await call(registry, ctx, "iasql_commit")
    assert await sql(dsn, "SELECT s.cidr_block FROM endpoint_interface e JOIN endpoint_interface_subnets j "
                          "ON j.endpoint_interface_id = e.id JOIN subnet s ON s.id = j.subnet_id "
                          "WHERE e.service = 'ecr' ORDER BY 1") == [("10.80.1.0/24",), ("10.80.2.0/24",)]

    # delete
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "DELETE FROM endpoint_interface")
    rows = await call(registry, ctx, "iasql_commit")
    assert sorted(applied(rows)) == [("delete", "endpoint_interface"), ("delete", "endpoint_interface")]
    assert [e for e in ec2.describe_vpc_endpoints()["VpcEndpoints"] if e["State"] not in ("deleted", "deleting")] == []


async def test_import_and_drift_through_rollback(registry, ctx, dsn, aws, vpc_mod):
    ec2 = aws("ec2")
    a = ec2.create_vpc(CidrBlock="10.90.0.0/16")["Vpc"]
    b = ec2.create_vpc(CidrBlock="10.91.0.0/16")["Vpc"]
    subnet = ec2.create_subnet(VpcId=a["VpcId"], CidrBlock="10.90.1.0/24", AvailabilityZone="us-east-1a")["Subnet"]
    dopt = ec2.create_dhcp_options(DhcpConfigurations=[{"Key": "domain-name", "Values": ["d.test"]}])["DhcpOptions"]
    acl = ec2.create_network_acl(VpcId=a["VpcId"])["NetworkAcl"]
    [assoc] = ec2.describe_network_acls(Filters=[{"Name": "association.subnet-id", "Values": [subnet["SubnetId"]]}])[
        "NetworkAcls"][0]["Associations"][:1]
    ec2.replace_network_acl_association(AssociationId=assoc["NetworkAclAssociationId"], NetworkAclId=acl["NetworkAclId"])
    pcx = ec2.create_vpc_peering_connection(VpcId=a["VpcId"], PeerVpcId=b["VpcId"])["VpcPeeringConnection"]
    ec2.accept_vpc_peering_connection(VpcPeeringConnectionId=pcx["VpcPeeringConnectionId"])
    ep = ec2.create_vpc_endpoint(VpcEndpointType="Interface", VpcId=a["VpcId"], SubnetIds=[subnet["SubnetId"]],
                                 ServiceName="com.amazonaws.us-east-1.ecs")["VpcEndpoint"]
    await call(registry, ctx, "iasql_begin")
    rows = await call(registry, ctx, "iasql_rollback")
    created = {(t, i) for a_, t, i, _ in rows if a_ == "create"}
    assert {("dhcp_options", dopt["DhcpOptionsId"]), ("network_acl", acl["NetworkAclId"]),
            ("peering_connection", pcx["VpcPeeringConnectionId"]), ("endpoint_interface", ep["VpcEndpointId"])} <= created
    assert await sql(dsn, "SELECT a.network_acl_id FROM subnet s JOIN network_acl a ON a.id = s.network_acl_id") == [
        (acl["NetworkAclId"],)]
    assert await sql(dsn, "SELECT r.vpc_id, x.vpc_id, p.state::text FROM peering_connection p "
                          "JOIN vpc r ON r.id = p.requester_id JOIN vpc x ON x.id = p.accepter_id") == [
        (a["VpcId"], b["VpcId"], "active")]
    assert await sql(dsn, "SELECT e.service::text, s.subnet_id FROM endpoint_interface e JOIN endpoint_interface_subnets j "
                          "ON j.endpoint_interface_id = e.id JOIN subnet s ON s.id = j.subnet_id") == [
        ("ecs", subnet["SubnetId"])]

    # drift: tags changed in the cloud, the DHCP options and the endpoint deleted there
    ec2.create_tags(Resources=[acl["NetworkAclId"], pcx["VpcPeeringConnectionId"]], Tags=[{"Key": "t", "Value": "x"}])
    ec2.delete_dhcp_options(DhcpOptionsId=dopt["DhcpOptionsId"])
    ec2.delete_vpc_endpoints(VpcEndpointIds=[ep["VpcEndpointId"]])
    await call(registry, ctx, "iasql_begin")
    rows = await call(registry, ctx, "iasql_rollback")
    assert {(x, t) for x, t, _, _ in rows} == {
        ("update", "network_acl"), ("update", "peering_connection"), ("delete", "dhcp_options"),
        ("delete", "endpoint_interface"), ("delete", "endpoint_interface_subnets"),
        ("update", "subnet")}  # the endpoint's address is free again: available_ip_address_count
    assert await sql(dsn, "SELECT tags::text FROM network_acl UNION ALL SELECT tags::text FROM peering_connection") == [
        ('{"t": "x"}',), ('{"t": "x"}',)]
    assert await sql(dsn, "SELECT count(*) FROM dhcp_options UNION ALL SELECT count(*) FROM endpoint_interface") == [
        (0,), (0,)]


async def test_second_region_and_a_peering_replaced_on_the_same_cidrs(registry, ctx, dsn, aws, vpc_mod):
    await sql(dsn, "UPDATE aws_regions SET is_enabled = true WHERE region = 'eu-west-1'")
    await call(registry, ctx, "iasql_begin")
    await call(registry, ctx, "iasql_rollback")
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO dhcp_options (dhcp_configurations, region) VALUES (%s, 'eu-west-1')",
              (json.dumps(DOMAIN),))
    await sql(dsn, "INSERT INTO vpc (cidr_block, region, dhcp_options_id) SELECT '10.95.0.0/16', region, id "
                   "FROM dhcp_options")
    await sql(dsn, "INSERT INTO network_acl (vpc_id, region) SELECT id, region FROM vpc WHERE cidr_block = '10.95.0.0/16'")
    await sql(dsn, "INSERT INTO subnet (cidr_block, availability_zone, vpc_id, region, network_acl_id) "
                   "SELECT '10.95.1.0/24', 'eu-west-1a', v.id, v.region, a.id FROM vpc v JOIN network_acl a ON a.vpc_id = v.id")
    await sql(dsn, "INSERT INTO endpoint_interface (service, vpc_id, region) SELECT 'ec2', id, region FROM vpc "
                   "WHERE cidr_block = '10.95.0.0/16'")
    await call(registry, ctx, "iasql_commit")
    eu = aws("ec2", "eu-west-1")
    vpc = vpc_of(aws, "10.95.0.0/16", "eu-west-1")
    [dopt] = eu.describe_dhcp_options()["DhcpOptions"]
    assert vpc["DhcpOptionsId"] == dopt["DhcpOptionsId"] and aws("ec2").describe_dhcp_options()["DhcpOptions"] == []
    [subnet] = eu.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["Subnets"]
    [acl] = eu.describe_network_acls(Filters=[{"Name": "association.subnet-id", "Values": [subnet["SubnetId"]]}])[
        "NetworkAcls"]
    assert not acl["IsDefault"]
    [ep] = eu.describe_vpc_endpoints(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["VpcEndpoints"]
    assert ep["ServiceName"] == "com.amazonaws.eu-west-1.ec2" and ep["SubnetIds"] == [subnet["SubnetId"]]
    assert await sql(dsn, "SELECT region FROM dhcp_options UNION ALL SELECT region FROM network_acl "
                          "UNION ALL SELECT region FROM endpoint_interface") == [("eu-west-1",)] * 3
    # a region-crossing reference is refused by the foreign keys
    await call(registry, ctx, "iasql_begin")
    with pytest.raises(Exception):
        await sql(dsn, "UPDATE vpc SET dhcp_options_id = (SELECT id FROM dhcp_options) WHERE is_default AND region = 'us-east-1'")
    await call(registry, ctx, "iasql_rollback")

    # a peering connection replaced by one between the same VPCs (other way round): the routes the
    # first one left are replaced
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO vpc (cidr_block) VALUES ('10.96.0.0/16')")
    await sql(dsn, "INSERT INTO peering_connection (requester_id, accepter_id) SELECT r.id, a.id FROM vpc r, vpc a "
                   "WHERE r.cidr_block = '10.96.0.0/16' AND a.cidr_block = '10.95.0.0/16'")
    await call(registry, ctx, "iasql_commit")
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE peering_connection SET requester_id = accepter_id, accepter_id = requester_id")
    rows = await call(registry, ctx, "iasql_commit")
    assert applied(rows) == [("replace", "peering_connection")]
    [(pcx,)] = await sql(dsn, "SELECT peering_connection_id FROM peering_connection")
    [p] = eu.describe_vpc_peering_connections(VpcPeeringConnectionIds=[pcx])["VpcPeeringConnections"]
    assert (p["RequesterVpcInfo"]["VpcId"], p["Status"]["Code"]) == (vpc["VpcId"], "active")
    [rt] = eu.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["RouteTables"]
    assert {r.get("VpcPeeringConnectionId") for r in rt["Routes"] if r.get("DestinationCidrBlock") == "10.96.0.0/16"} == {
        pcx}

    # uninstall and install again: the tables come back with the cloud's rows
    await call(registry, ctx, "iasql_uninstall", "aws_vpc")
    rows = await call(registry, ctx, "iasql_install", "aws_vpc")
    counts = {t: n for _, t, n in rows}
    assert (counts["dhcp_options"], counts["network_acl"], counts["peering_connection"],
            counts["endpoint_interface"], counts["endpoint_interface_subnets"]) == (1, 1, 1, 1, 1)
