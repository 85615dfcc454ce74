"""Module aws_vpc through the engine against a real moto server, checked with boto3 and the tables."""

from __future__ import annotations

import pytest

from engine.rpc import EngineError
from tests.engine.support import call, sql


@pytest.fixture
async def vpc_mod(registry, ctx, dsn):
    """aws_vpc installed (the default VPC and its subnets imported); returns the install rows."""
    rows = await call(registry, ctx, "iasql_install", "aws_vpc")
    await sql(dsn, "INSERT INTO aws_credentials (access_key_id, secret_access_key) VALUES ('testing', 'testing')")
    return rows


def vpcs_by_cidr(aws, region="us-east-1"):
    return {v["CidrBlock"]: v for v in aws("ec2", region).describe_vpcs()["Vpcs"]}


async def test_install_imports_the_default_vpc(registry, ctx, dsn, aws, vpc_mod):
    ec2 = aws("ec2")
    [default] = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    counts = {t: n for _, t, n in vpc_mod}
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [default["VpcId"]]}])["Subnets"]
    zones = ec2.describe_availability_zones()["AvailabilityZones"]
    assert counts == {"availability_zone": len(zones), "vpc": 1, "subnet": len(subnets), "internet_gateway": 0,
                      "elastic_ip": 0, "route_table": 1, "route_table_association": 1, "route": 1,
                      "nat_gateway": 0, "endpoint_gateway": 0,
                      # moto has no DHCP options until one is made (AWS's default set would come in),
                      # default network ACLs are not read (as IaSQL)
                      "dhcp_options": 0, "network_acl": 0, "peering_connection": 0, "endpoint_interface": 0,
                      "endpoint_interface_subnets": 0}
    assert await sql(dsn, "SELECT vpc_id, cidr_block, state::text, is_default, region FROM vpc") == [
        (default["VpcId"], "172.31.0.0/16", "available", True, "us-east-1")]
    got = await sql(dsn, "SELECT s.subnet_id, s.cidr_block, s.availability_zone, s.state::text, s.subnet_arn "
                         "FROM subnet s JOIN vpc v ON v.id = s.vpc_id ORDER BY s.subnet_id")
    assert got == sorted((s["SubnetId"], s["CidrBlock"], s["AvailabilityZone"], "available", s["SubnetArn"])
                         for s in subnets)
    [(rtb, is_main, dest, gw)] = await sql(
        dsn, "SELECT t.route_table_id, a.is_main, r.destination, r.gateway_id FROM route_table t "
             "JOIN route_table_association a ON a.route_table_id = t.id JOIN route r ON r.route_table_id = t.id")
    assert is_main and (dest, gw) == ("172.31.0.0/16", "local") and rtb.startswith("rtb-")
    # the default VPC and its subnets cannot be deleted: the rows come back, the cloud keeps them
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "DELETE FROM route_table_association; DELETE FROM route; DELETE FROM route_table; "
                   "DELETE FROM subnet; DELETE FROM vpc")
    await call(registry, ctx, "iasql_commit")
    assert await sql(dsn, "SELECT vpc_id FROM vpc") == [(default["VpcId"],)]
    assert await sql(dsn, "SELECT count(*) FROM subnet") == [(len(subnets),)]
    assert await sql(dsn, "SELECT count(*) FROM route") == [(1,)]
    assert len(ec2.describe_subnets()["Subnets"]) == len(subnets)


async def test_create_network_in_one_commit_then_update_replace_delete(registry, ctx, dsn, aws, vpc_mod):
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, """INSERT INTO vpc (cidr_block, tags, enable_dns_support) VALUES ('10.10.0.0/16', '{"Name": "app"}', true)""")
    await sql(dsn, "INSERT INTO subnet (cidr_block, availability_zone, vpc_id) "
                   "SELECT '10.10.1.0/24', 'us-east-1a', id FROM vpc WHERE cidr_block = '10.10.0.0/16'")
    await sql(dsn, """INSERT INTO internet_gateway (vpc_id, tags) SELECT id, '{"Name": "app-igw"}' FROM vpc
                      WHERE cidr_block = '10.10.0.0/16'""")
    await sql(dsn, "INSERT INTO route_table (vpc_id) SELECT id FROM vpc WHERE cidr_block = '10.10.0.0/16'")
    await sql(dsn, "INSERT INTO route (destination, gateway_id, route_table_id) "
                   "SELECT '10.10.0.0/16', 'local', t.id FROM route_table t JOIN vpc v ON v.id = t.vpc_id "
                   "WHERE v.cidr_block = '10.10.0.0/16'")
    await sql(dsn, "INSERT INTO route_table_association (route_table_id, subnet_id, vpc_id) "
                   "SELECT t.id, s.id, v.id FROM route_table t JOIN vpc v ON v.id = t.vpc_id "
                   "JOIN subnet s ON s.vpc_id = v.id WHERE v.cidr_block = '10.10.0.0/16'")
    preview = await call(registry, ctx, "iasql_preview")
    assert sorted((a, t) for a, t, _, _ in preview) == [
        ("create", "internet_gateway"), ("create", "route"), ("create", "route_table"),
        ("create", "route_table_association"), ("create", "subnet"), ("create", "vpc")]
    [(vpc_pk,)] = await sql(dsn, "SELECT id FROM vpc WHERE cidr_block = '10.10.0.0/16'")
    # a row to create is named by its primary key (it has no cloud id yet)
    assert ("create", "vpc", str(vpc_pk), "VPC 10.10.0.0/16 (new) in us-east-1") in preview
    assert "10.10.0.0/16" not in vpcs_by_cidr(aws)  # preview changes nothing

    rows = await call(registry, ctx, "iasql_commit")
    applied = [(a, t) for a, t, _, d in rows if not d.startswith("synced")]
    # dependency order: the vpc first, the association after its route table and subnet
    assert [t for _, t in applied] == ["vpc", "subnet", "internet_gateway", "route_table",
                                       "route_table_association", "route"]
    ec2 = aws("ec2")
    vpc = vpcs_by_cidr(aws)["10.10.0.0/16"]
    assert vpc["Tags"] == [{"Key": "Name", "Value": "app"}]
    assert ec2.describe_vpc_attribute(VpcId=vpc["VpcId"], Attribute="enableDnsSupport")["EnableDnsSupport"]["Value"]
    [subnet] = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["Subnets"]
    assert (subnet["CidrBlock"], subnet["AvailabilityZone"]) == ("10.10.1.0/24", "us-east-1a")
    [igw] = ec2.describe_internet_gateways(Filters=[{"Name": "attachment.vpc-id", "Values": [vpc["VpcId"]]}])[
        "InternetGateways"]
    tables = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["RouteTables"]
    mine = [t for t in tables if any(a.get("SubnetId") == subnet["SubnetId"] for a in t["Associations"])]
    assert len(tables) == 2 and len(mine) == 1
    # the tables hold the cloud ids, and the sync brought in the VPC's main route table
    assert await sql(dsn, "SELECT v.vpc_id, s.subnet_id, g.internet_gateway_id FROM vpc v JOIN subnet s ON s.vpc_id = v.id "
                          "JOIN internet_gateway g ON g.vpc_id = v.id") == [
        (vpc["VpcId"], subnet["SubnetId"], igw["InternetGatewayId"])]
    got = await sql(dsn, "SELECT t.route_table_id, a.is_main, a.route_table_association_id IS NOT NULL FROM route_table t "
                         "JOIN route_table_association a ON a.route_table_id = t.id JOIN vpc v ON v.id = t.vpc_id "
                         "WHERE v.vpc_id = %s ORDER BY a.is_main", (vpc["VpcId"],))
    assert got == [(mine[0]["RouteTableId"], False, True),
                   (next(t["RouteTableId"] for t in tables if t is not mine[0]), True, True)]

    # a route to the gateway (its id is known now), a tag change: both in place or added
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO route (destination, gateway_id, route_table_id) SELECT '0.0.0.0/0', g.internet_gateway_id, t.id "
                   "FROM route_table t, internet_gateway g WHERE t.route_table_id = %s AND g.internet_gateway_id = %s",
              (mine[0]["RouteTableId"], igw["InternetGatewayId"]))
    await sql(dsn, """UPDATE vpc SET tags = '{"Name": "app", "env": "test", "n": 1}' WHERE vpc_id = %s""", (vpc["VpcId"],))
    rows = await call(registry, ctx, "iasql_commit")
    assert {(a, t) for a, t, _, d in rows if not d.startswith("synced")} == {("update", "vpc"), ("create", "route")}
    assert sorted((t["Key"], t["Value"]) for t in vpcs_by_cidr(aws)["10.10.0.0/16"]["Tags"]) == [
        ("Name", "app"), ("env", "test"), ("n", "1")]  # AWS tag values are text
    assert vpcs_by_cidr(aws)["10.10.0.0/16"]["VpcId"] == vpc["VpcId"]  # updated, not replaced
    [rt] = ec2.describe_route_tables(RouteTableIds=[mine[0]["RouteTableId"]])["RouteTables"]
    assert {(r.get("DestinationCidrBlock"), r.get("GatewayId")) for r in rt["Routes"]} == {
        ("10.10.0.0/16", "local"), ("0.0.0.0/0", igw["InternetGatewayId"])}

    # delete everything of the VPC (children first, as the foreign keys ask)
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "DELETE FROM route_table_association WHERE NOT is_main AND vpc_id = (SELECT id FROM vpc WHERE vpc_id = %s)",
              (vpc["VpcId"],))
    await sql(dsn, "DELETE FROM subnet WHERE subnet_id = %s", (subnet["SubnetId"],))
    await sql(dsn, "DELETE FROM vpc WHERE vpc_id = %s", (vpc["VpcId"],))  # cascades to gateway, tables, routes
    rows = await call(registry, ctx, "iasql_commit")
    deleted = {t for a, t, _, d in rows if a == "delete" and not d.startswith("synced")}
    # the route goes with its route table in the cloud; the main route table and its local route with the VPC
    assert deleted == {"route_table_association", "subnet", "vpc", "internet_gateway", "route_table"}
    assert "10.10.0.0/16" not in vpcs_by_cidr(aws)
    assert ec2.describe_internet_gateways(InternetGatewayIds=[])["InternetGateways"] == []
    assert await sql(dsn, "SELECT count(*) FROM vpc") == [(1,)]
    assert await sql(dsn, "SELECT count(*) FROM route_table") == [(1,)]


async def test_cidr_change_replaces_the_vpc(registry, ctx, dsn, aws, vpc_mod):
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO vpc (cidr_block) VALUES ('10.20.0.0/16')")
    await call(registry, ctx, "iasql_commit")
    [(row_id, old)] = await sql(dsn, "SELECT id, vpc_id FROM vpc WHERE cidr_block = '10.20.0.0/16'")
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE vpc SET cidr_block = '10.21.0.0/16' WHERE id = %s", (row_id,))
    rows = await call(registry, ctx, "iasql_commit")
    assert ("replace", "vpc") in {(a, t) for a, t, _, _ in rows}
    by_cidr = vpcs_by_cidr(aws)
    assert "10.20.0.0/16" not in by_cidr and by_cidr["10.21.0.0/16"]["VpcId"] != old
    assert await sql(dsn, "SELECT id, vpc_id FROM vpc WHERE cidr_block = '10.21.0.0/16'") == [
        (row_id, by_cidr["10.21.0.0/16"]["VpcId"])]
    # the new VPC's main route table replaced the old one's in the tables
    assert await sql(dsn, "SELECT t.route_table_id FROM route_table t WHERE t.vpc_id = %s", (row_id,)) == [
        (aws("ec2").describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [by_cidr["10.21.0.0/16"]["VpcId"]]}])[
            "RouteTables"][0]["RouteTableId"],)]


async def test_import_and_drift_through_rollback(registry, ctx, dsn, aws, vpc_mod):
    ec2 = aws("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.30.0.0/16", TagSpecifications=[
        {"ResourceType": "vpc", "Tags": [{"Key": "team", "Value": "net"}]}])["Vpc"]
    subnet = ec2.create_subnet(VpcId=vpc["VpcId"], CidrBlock="10.30.5.0/24", AvailabilityZone="us-east-1b")["Subnet"]
    eip = ec2.allocate_address(Domain="vpc")
    await call(registry, ctx, "iasql_begin")
    rows = await call(registry, ctx, "iasql_rollback")
    created = {(a, t, i) for a, t, i, _ in rows if a == "create"}
    assert {("create", "vpc", vpc["VpcId"]), ("create", "subnet", subnet["SubnetId"]),
            ("create", "elastic_ip", eip["AllocationId"])} <= created
    assert await sql(dsn, "SELECT cidr_block, tags::text, enable_dns_support FROM vpc WHERE vpc_id = %s", (vpc["VpcId"],)) == [
        ("10.30.0.0/16", '{"team": "net"}', True)]
    assert await sql(dsn, "SELECT s.cidr_block, s.availability_zone FROM subnet s JOIN vpc v ON v.id = s.vpc_id "
                          "WHERE v.vpc_id = %s", (vpc["VpcId"],)) == [("10.30.5.0/24", "us-east-1b")]
    assert await sql(dsn, "SELECT public_ip FROM elastic_ip") == [(eip["PublicIp"],)]

    # drift: a tag and an attribute changed in the cloud, a subnet deleted there
    ec2.create_tags(Resources=[vpc["VpcId"]], Tags=[{"Key": "team", "Value": "platform"}])
    ec2.modify_vpc_attribute(VpcId=vpc["VpcId"], EnableDnsSupport={"Value": False})
    ec2.delete_subnet(SubnetId=subnet["SubnetId"])
    await call(registry, ctx, "iasql_begin")
    [(vpc_pk,)] = await sql(dsn, "SELECT id FROM vpc WHERE vpc_id = %s", (vpc["VpcId"],))
    # without changes of the user, the preview is what a commit's sync would pull in
    assert await call(registry, ctx, "iasql_preview") == [
        ("delete", "subnet", subnet["SubnetId"], f"subnet 10.30.5.0/24 ({subnet['SubnetId']}) in us-east-1b of VPC #{vpc_pk}"),
        ("update", "vpc", vpc["VpcId"], f"VPC 10.30.0.0/16 ({vpc['VpcId']}) in us-east-1")]
    rows = await call(registry, ctx, "iasql_rollback")
    assert {(a, t) for a, t, _, _ in rows} == {("update", "vpc"), ("delete", "subnet")}
    assert await sql(dsn, "SELECT tags::text, enable_dns_support FROM vpc WHERE vpc_id = %s", (vpc["VpcId"],)) == [
        ('{"team": "platform"}', False)]
    assert await sql(dsn, "SELECT count(*) FROM subnet s JOIN vpc v ON v.id = s.vpc_id WHERE v.vpc_id = %s",
                     (vpc["VpcId"],)) == [(0,)]


async def test_two_regions(registry, ctx, dsn, aws, vpc_mod):
    await sql(dsn, "UPDATE aws_regions SET is_enabled = true WHERE region = 'eu-west-1'")
    await call(registry, ctx, "iasql_begin")
    rows = await call(registry, ctx, "iasql_rollback")
    # enabling a region brings in its default VPC, subnets and zones
    assert await sql(dsn, "SELECT region, is_default FROM vpc ORDER BY region") == [
        ("eu-west-1", True), ("us-east-1", True)]
    assert ("create", "availability_zone", "eu-west-1a", "availability zone eu-west-1a in eu-west-1") in rows
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO vpc (cidr_block, region) VALUES ('10.40.0.0/16', 'eu-west-1'), ('10.41.0.0/16', 'us-east-1')")
    await sql(dsn, "INSERT INTO subnet (cidr_block, availability_zone, vpc_id, region) "
                   "SELECT '10.40.1.0/24', 'eu-west-1b', id, region FROM vpc WHERE cidr_block = '10.40.0.0/16'")
    await call(registry, ctx, "iasql_commit")
    assert "10.40.0.0/16" in vpcs_by_cidr(aws, "eu-west-1") and "10.40.0.0/16" not in vpcs_by_cidr(aws)
    assert "10.41.0.0/16" in vpcs_by_cidr(aws) and "10.41.0.0/16" not in vpcs_by_cidr(aws, "eu-west-1")
    [s] = aws("ec2", "eu-west-1").describe_subnets(Filters=[{"Name": "cidr-block", "Values": ["10.40.1.0/24"]}])["Subnets"]
    assert s["AvailabilityZone"] == "eu-west-1b"
    # a subnet in a zone of another region is refused by the foreign key
    await call(registry, ctx, "iasql_begin")
    with pytest.raises(Exception) as ei:
        await sql(dsn, "INSERT INTO subnet (cidr_block, availability_zone, vpc_id, region) "
                       "SELECT '10.40.2.0/24', 'us-east-1a', id, region FROM vpc WHERE cidr_block = '10.40.0.0/16'")
    assert "fk_subnet_availability_zone" in str(ei.value)
    await call(registry, ctx, "iasql_rollback")


async def test_elastic_ip_nat_gateway_and_endpoint(registry, ctx, dsn, aws, vpc_mod):
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO vpc (cidr_block) VALUES ('10.50.0.0/16')")
    await sql(dsn, "INSERT INTO subnet (cidr_block, availability_zone, vpc_id) SELECT '10.50.1.0/24', 'us-east-1a', id "
                   "FROM vpc WHERE cidr_block = '10.50.0.0/16'")
    await sql(dsn, """INSERT INTO elastic_ip (tags) VALUES ('{"Name": "nat-ip"}')""")
    await sql(dsn, "INSERT INTO nat_gateway (connectivity_type, subnet_id, elastic_ip_id) "
                   "SELECT 'public', s.id, e.id FROM subnet s, elastic_ip e WHERE s.cidr_block = '10.50.1.0/24'")
    await sql(dsn, "INSERT INTO endpoint_gateway (service, vpc_id) SELECT 's3', id FROM vpc WHERE cidr_block = '10.50.0.0/16'")
    await call(registry, ctx, "iasql_commit")
    ec2 = aws("ec2")
    [addr] = ec2.describe_addresses()["Addresses"]
    assert addr["Tags"] == [{"Key": "Name", "Value": "nat-ip"}]
    [nat] = [n for n in ec2.describe_nat_gateways()["NatGateways"] if n["State"] == "available"]
    assert nat["NatGatewayAddresses"][0]["AllocationId"] == addr["AllocationId"]
    vpc_id = vpcs_by_cidr(aws)["10.50.0.0/16"]["VpcId"]
    [ep] = ec2.describe_vpc_endpoints(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["VpcEndpoints"]
    assert ep["ServiceName"] == "com.amazonaws.us-east-1.s3" and ep["VpcEndpointType"] == "Gateway"
    [main_rtb] = [t["RouteTableId"] for t in ec2.describe_route_tables(
        Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["RouteTables"]]
    assert await sql(dsn, "SELECT e.vpc_endpoint_id, e.route_table_ids, e.state FROM endpoint_gateway e") == [
        (ep["VpcEndpointId"], [main_rtb], "available")]
    assert await sql(dsn, "SELECT n.nat_gateway_id, n.state::text, e.public_ip FROM nat_gateway n "
                          "JOIN elastic_ip e ON e.id = n.elastic_ip_id") == [(nat["NatGatewayId"], "available", addr["PublicIp"])]
    # tags of the NAT gateway and the endpoint's route tables in place
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, """UPDATE nat_gateway SET tags = '{"k": "v"}'""")
    await sql(dsn, "UPDATE endpoint_gateway SET route_table_ids = '{}'")
    rows = await call(registry, ctx, "iasql_commit")
    assert {(a, t, i) for a, t, i, d in rows if not d.startswith("synced")} == {
        ("update", "nat_gateway", nat["NatGatewayId"]), ("update", "endpoint_gateway", ep["VpcEndpointId"])}
    [got_ep] = ec2.describe_vpc_endpoints(VpcEndpointIds=[ep["VpcEndpointId"]])["VpcEndpoints"]
    assert got_ep.get("RouteTableIds", []) == []
    [got] = ec2.describe_nat_gateways(NatGatewayIds=[nat["NatGatewayId"]])["NatGateways"]
    assert got["Tags"] == [{"Key": "k", "Value": "v"}]
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "DELETE FROM nat_gateway; DELETE FROM elastic_ip; DELETE FROM endpoint_gateway")
    await call(registry, ctx, "iasql_commit")
    assert ec2.describe_addresses()["Addresses"] == []
    assert [n["State"] for n in ec2.describe_nat_gateways()["NatGateways"]] == ["deleted"]
    # moto keeps a deleted endpoint, in state "deleted"
    assert [e["State"] for e in ec2.describe_vpc_endpoints(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])[
        "VpcEndpoints"]] == ["deleted"]
    assert await sql(dsn, "SELECT count(*) FROM endpoint_gateway") == [(0,)]


async def test_security_groups_live_in_vpcs(registry, ctx, dsn, aws):
    rows = await call(registry, ctx, "iasql_install", "aws_security_group")
    # aws_vpc comes with aws_security_group (its dependency, as in IaSQL)
    assert {m for m, _, _ in rows} == {"aws_security_group@0.1.0"}
    assert [r[0] for r in await call(registry, ctx, "iasql_modules_installed")
            if r[0].startswith("aws_")] == ["aws_account", "aws_security_group", "aws_vpc"]
    [(default_vpc,)] = await sql(dsn, "SELECT id FROM vpc WHERE is_default")
    assert await sql(dsn, "SELECT group_name, vpc_id FROM security_group") == [("default", default_vpc)]
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO vpc (cidr_block) VALUES ('10.60.0.0/16')")
    await sql(dsn, "INSERT INTO security_group (description, group_name, vpc_id) "
                   "SELECT 'in a vpc', 'iasql-in-vpc', id FROM vpc WHERE cidr_block = '10.60.0.0/16'")
    await call(registry, ctx, "iasql_commit")
    vpc = vpcs_by_cidr(aws)["10.60.0.0/16"]
    groups = aws("ec2").describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["SecurityGroups"]
    assert sorted(g["GroupName"] for g in groups) == ["default", "iasql-in-vpc"]
    # both groups of the new VPC are rows that reference it
    assert await sql(dsn, "SELECT g.group_name FROM security_group g JOIN vpc v ON v.id = g.vpc_id "
                          "WHERE v.vpc_id = %s ORDER BY 1", (vpc["VpcId"],)) == [("default",), ("iasql-in-vpc",)]
    # vpc_id NULL means the default VPC: the group is replaced by one there, the sync fills in vpc_id
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE security_group SET vpc_id = NULL WHERE group_name = 'iasql-in-vpc'")
    rows = await call(registry, ctx, "iasql_commit")
    assert ("replace", "security_group") in {(a, t) for a, t, _, _ in rows}
    [moved] = aws("ec2").describe_security_groups(Filters=[{"Name": "group-name", "Values": ["iasql-in-vpc"]}])[
        "SecurityGroups"]
    assert moved["VpcId"] == (await sql(dsn, "SELECT vpc_id FROM vpc WHERE is_default"))[0][0]
    assert await sql(dsn, "SELECT group_id, vpc_id FROM security_group WHERE group_name = 'iasql-in-vpc'") == [
        (moved["GroupId"], default_vpc)]
    # a VPC row still referenced by groups cannot go (IaSQL's foreign key); with them it can
    await call(registry, ctx, "iasql_begin")
    with pytest.raises(Exception) as ei:
        await sql(dsn, "DELETE FROM vpc WHERE vpc_id = %s", (vpc["VpcId"],))
    assert "fk_security_group_vpc" in str(ei.value)
    await sql(dsn, "DELETE FROM security_group_rule WHERE security_group_id IN (SELECT g.id FROM security_group g "
                   "JOIN vpc v ON v.id = g.vpc_id WHERE v.vpc_id = %s)", (vpc["VpcId"],))
    await sql(dsn, "DELETE FROM security_group WHERE vpc_id = (SELECT id FROM vpc WHERE vpc_id = %s)", (vpc["VpcId"],))
    await sql(dsn, "DELETE FROM vpc WHERE vpc_id = %s", (vpc["VpcId"],))
    await call(registry, ctx, "iasql_commit")
    assert "10.60.0.0/16" not in vpcs_by_cidr(aws)
    assert await sql(dsn, "SELECT group_name, vpc_id FROM security_group ORDER BY 1") == [
        ("default", default_vpc), ("iasql-in-vpc", default_vpc)]
    # aws_vpc cannot go while aws_security_group depends on it
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "iasql_uninstall", "aws_vpc")
    assert ei.value.sqlstate == "2BP01"
    await call(registry, ctx, "iasql_uninstall", "aws_security_group", "aws_vpc")
    assert await sql(dsn, "SELECT to_regclass('public.vpc'), to_regtype('public.vpc_state_enum')") == [(None, None)]


async def test_association_and_gateway_change_in_place(registry, ctx, dsn, aws, vpc_mod):
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO vpc (cidr_block) VALUES ('10.70.0.0/16'), ('10.71.0.0/16')")
    await sql(dsn, "INSERT INTO subnet (cidr_block, availability_zone, vpc_id) SELECT '10.70.1.0/24', 'us-east-1a', id "
                   "FROM vpc WHERE cidr_block = '10.70.0.0/16'")
    await sql(dsn, "INSERT INTO internet_gateway (vpc_id) SELECT id FROM vpc WHERE cidr_block = '10.70.0.0/16'")
    await sql(dsn, """INSERT INTO route_table (vpc_id, tags) SELECT id, '{"Name": "first"}' FROM vpc
                      WHERE cidr_block = '10.70.0.0/16'""")
    await sql(dsn, "INSERT INTO route_table_association (route_table_id, subnet_id, vpc_id) SELECT t.id, s.id, t.vpc_id "
                   "FROM route_table t JOIN subnet s ON s.vpc_id = t.vpc_id WHERE s.cidr_block = '10.70.1.0/24'")
    await call(registry, ctx, "iasql_commit")
    ec2 = aws("ec2")
    [(assoc, igw, subnet)] = await sql(
        dsn, "SELECT a.route_table_association_id, g.internet_gateway_id, s.subnet_id FROM route_table_association a "
             "JOIN subnet s ON s.id = a.subnet_id JOIN internet_gateway g ON g.vpc_id = a.vpc_id")
    # point the subnet at the VPC's main route table, move the gateway to the other VPC
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "UPDATE route_table_association a SET route_table_id = m.route_table_id FROM route_table_association m "
                   "WHERE m.vpc_id = a.vpc_id AND m.is_main AND a.route_table_association_id = %s", (assoc,))
    await sql(dsn, "UPDATE internet_gateway SET vpc_id = (SELECT id FROM vpc WHERE cidr_block = '10.71.0.0/16')")
    rows = await call(registry, ctx, "iasql_commit")
    assert {(a, t) for a, t, _, d in rows if not d.startswith("synced")} == {
        ("update", "route_table_association"), ("update", "internet_gateway")}
    [main] = [t for t in ec2.describe_route_tables(Filters=[{"Name": "association.subnet-id", "Values": [subnet]}])[
        "RouteTables"]]
    assert any(a.get("Main") for a in main["Associations"])  # the subnet now uses the main route table
    [gw] = ec2.describe_internet_gateways(InternetGatewayIds=[igw])["InternetGateways"]
    assert [a["VpcId"] for a in gw["Attachments"]] == [vpcs_by_cidr(aws)["10.71.0.0/16"]["VpcId"]]
    assert await sql(dsn, "SELECT v.cidr_block FROM internet_gateway g JOIN vpc v ON v.id = g.vpc_id") == [("10.71.0.0/16",)]
    # the first route table is unused now: delete it; an insert of a second main association is refused
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, """DELETE FROM route_table WHERE tags->>'Name' = 'first'""")
    await call(registry, ctx, "iasql_commit")
    assert len(ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [
        vpcs_by_cidr(aws)["10.70.0.0/16"]["VpcId"]]}])["RouteTables"]) == 1
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO route_table_association (route_table_id, vpc_id, is_main) "
                   "SELECT id, vpc_id, true FROM route_table WHERE route_table_id IS NOT NULL LIMIT 1")
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "iasql_commit")
    assert ei.value.sqlstate == "58000" and "main association comes with the VPC" in ei.value.message


async def test_listed_and_installed_with_security_groups_in_one_call(registry, ctx, dsn):
    mods = {r[0]: r for r in await call(registry, ctx, "iasql_modules_list")}
    assert mods["aws_vpc"][1:] == ("0.1.0", ["iasql_platform@0.1.0", "iasql_functions@0.1.0", "aws_account@0.1.0"])
    assert "aws_vpc@0.1.0" in mods["aws_security_group"][2]
    rows = await call(registry, ctx, "iasql_install", "aws_vpc", "aws_security_group")
    assert [t for _, t, _ in rows] == ["availability_zone", "dhcp_options", "vpc", "network_acl", "subnet",
                                      "internet_gateway", "elastic_ip", "route_table", "route_table_association",
                                      "route", "peering_connection", "nat_gateway", "endpoint_gateway",
                                      "endpoint_interface", "endpoint_interface_subnets", "security_group",
                                      "security_group_rule"]
    # iasql_help runs with the module installed (aws_vpc adds no SQL functions of its own)
    help_rows = await call(registry, ctx, "iasql_help")
    assert {r[0] for r in help_rows} == {"iasql_functions", "aws_account"}
    install = next(r for r in help_rows if r[1] == "iasql_install")
    assert install[4] == "SELECT * FROM iasql_install('aws_s3', 'aws_iam')"
    assert await sql(dsn, "SELECT count(*) FROM security_group g JOIN vpc v ON v.id = g.vpc_id AND v.is_default") == [(1,)]


async def test_failed_subnet_takes_back_the_new_vpc(registry, ctx, dsn, aws, vpc_mod):
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO vpc (cidr_block) VALUES ('10.80.0.0/16')")
    await sql(dsn, "INSERT INTO subnet (cidr_block, availability_zone, vpc_id) SELECT '10.99.1.0/24', 'us-east-1a', id "
                   "FROM vpc WHERE cidr_block = '10.80.0.0/16'")  # outside the VPC's range: AWS refuses it
    with pytest.raises(EngineError) as ei:
        await call(registry, ctx, "iasql_commit")
    assert ei.value.sqlstate == "58000" and "ec2.create_subnet" in ei.value.message
    assert "The cloud changes this commit made were taken back." in ei.value.detail
    assert "10.80.0.0/16" not in vpcs_by_cidr(aws)
    assert await sql(dsn, "SELECT count(*) FROM vpc WHERE cidr_block = '10.80.0.0/16'") == [(0,)]


async def test_security_groups_of_a_database_installed_before_aws_vpc(registry, ctx, dsn, aws):
    """A database whose aws_security_group predates its dependency on aws_vpc (no vpc table, no
    foreign key) keeps working on the default VPC's groups, with vpc_id NULL."""
    await call(registry, ctx, "iasql_install", "aws_security_group")
    await sql(dsn, "ALTER TABLE security_group DROP CONSTRAINT fk_security_group_vpc; "
                   "UPDATE security_group SET vpc_id = NULL; "
                   "DELETE FROM iasql_dependencies WHERE dependency = 'aws_vpc@0.1.0'; "
                   "DELETE FROM iasql_tables WHERE module = 'aws_vpc@0.1.0'; "
                   "DELETE FROM iasql_module WHERE name = 'aws_vpc@0.1.0'; "
                   "DROP TABLE endpoint_interface_subnets, endpoint_interface, network_acl, peering_connection, "
                   "endpoint_gateway, nat_gateway, route, route_table_association, route_table, elastic_ip, "
                   "internet_gateway, subnet, vpc, dhcp_options, availability_zone")
    aws("ec2").create_vpc(CidrBlock="10.90.0.0/16")  # its default group is not read without the vpc table
    await call(registry, ctx, "iasql_begin")
    await sql(dsn, "INSERT INTO security_group (description, group_name) VALUES ('old db', 'iasql-old')")
    rows = await call(registry, ctx, "iasql_commit")
    assert [(a, t) for a, t, _, d in rows if not d.startswith("synced")] == [("create", "security_group")]
    [group] = aws("ec2").describe_security_groups(Filters=[{"Name": "group-name", "Values": ["iasql-old"]}])[
        "SecurityGroups"]
    ec2 = aws("ec2")
    [default_vpc] = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    [default] = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [default_vpc["VpcId"]]},
                                                      {"Name": "group-name", "Values": ["default"]}])["SecurityGroups"]
    assert group["VpcId"] == default_vpc["VpcId"]
    assert await sql(dsn, "SELECT group_name, group_id, vpc_id FROM security_group ORDER BY 1") == [
        ("default", default["GroupId"], None), ("iasql-old", group["GroupId"], None)]
